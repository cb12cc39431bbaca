-- Sales per day (Sydney time) and product.
-- materialized: table
-- unique_key: day, product
-- tests: unique(day, product), row_count > 0
SELECT
    (sold_at AT TIME ZONE 'Australia/Sydney')::date AS day,
    product,
    sum(quantity) AS items,
    sum(quantity * unit_price) AS revenue
FROM stg.shopfront_sales
GROUP BY 1, 2
