-- Customers still present at the source; `elt reconcile` sets _deleted_at on the others.
-- materialized: view
-- unique_key: id
-- tests: unique(id)
SELECT (_raw_payload ->> 'id')::int AS id, _raw_payload ->> 'email' AS email
FROM raw.shop_customers
WHERE _deleted_at IS NULL
