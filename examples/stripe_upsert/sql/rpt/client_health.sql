-- Per customer: what they paid, how often they refund, when they last bought. Refreshed
-- concurrently (unique index on customer_id), so dashboards keep reading while it refreshes.
-- materialized: materialized_view
-- unique_key: customer_id
-- tests: unique(customer_id), relationships(customer_id: stg.stripe_customers.id)
SELECT
    c.id AS customer_id,
    c.email,
    c.segment,
    count(ch.id) AS charges,
    coalesce(sum(ch.amount) FILTER (WHERE ch.status = 'succeeded'), 0) AS paid,
    round(coalesce(avg((ch.status = 'refunded')::int), 0), 3) AS refund_rate,
    max(ch.created_at) AS last_charge_at,
    CASE
        WHEN count(ch.id) = 0 THEN 'new'
        WHEN avg((ch.status = 'refunded')::int) > 0.5 THEN 'at risk'
        ELSE 'healthy'
    END AS health
FROM stg.stripe_customers AS c
LEFT JOIN stg.stripe_charges AS ch ON ch.customer_id = c.id
GROUP BY c.id, c.email, c.segment
