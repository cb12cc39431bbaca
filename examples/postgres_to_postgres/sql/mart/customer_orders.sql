-- materialized: table
-- unique_key: customer_id
-- tests: unique(customer_id)
SELECT c.id AS customer_id, c.email, count(o.id) AS orders,
       coalesce(sum(o.total) FILTER (WHERE o.status <> 'refunded'), 0) AS revenue
FROM stg.shop_customers AS c
LEFT JOIN stg.shop_orders AS o ON o.customer_id = c.id
GROUP BY c.id, c.email
