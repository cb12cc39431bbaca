-- materialized: view
-- unique_key: id
-- tests: unique(id), not_null(customer_id), accepted_values(status: paid, shipped, delivered, refunded)
SELECT
    (_raw_payload ->> 'id')::bigint AS id,
    (_raw_payload ->> 'customer_id')::int AS customer_id,
    _raw_payload ->> 'status' AS status,
    (_raw_payload ->> 'total')::numeric(12, 2) AS total,
    (_raw_payload ->> 'updated_at')::timestamptz AS updated_at
FROM raw.shop_orders
