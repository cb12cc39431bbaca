-- One typed row per charge. Amounts arrive in cents; money is numeric in dollars from here on.
-- materialized: view
-- unique_key: id
-- tests: unique(id), not_null(id, customer_id), accepted_values(status: pending, succeeded, refunded, failed)
SELECT
    _raw_payload ->> 'id' AS id,
    _raw_payload ->> 'customer' AS customer_id,
    _raw_payload ->> 'status' AS status,
    (_raw_payload ->> 'amount')::numeric / 100 AS amount,
    upper(_raw_payload ->> 'currency') AS currency,
    to_timestamp((_raw_payload ->> 'created')::bigint) AS created_at
FROM raw.stripe_charges
