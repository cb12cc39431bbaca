-- Revenue per day and currency: succeeded charges only (pending ones may still fail, refunds are not revenue).
-- materialized: table
-- unique_key: day, currency
-- tests: unique(day, currency), not_null(revenue), row_count > 0
SELECT
    date_trunc('day', created_at)::date AS day,
    currency,
    sum(amount) AS revenue,
    count(*) AS charges
FROM stg.stripe_charges
WHERE status = 'succeeded'
GROUP BY 1, 2
