-- One typed row per Stripe customer (raw.stripe_customers is upserted: already one row per id).
-- materialized: view
-- unique_key: id
-- tests: unique(id), not_null(id, email)
SELECT
    _raw_payload ->> 'id' AS id,
    _raw_payload ->> 'email' AS email,
    _raw_payload ->> 'name' AS name,
    _raw_payload -> 'metadata' ->> 'segment' AS segment,
    -- Stripe sends Unix seconds.
    to_timestamp((_raw_payload ->> 'created')::bigint) AS created_at,
    _loaded_at
FROM raw.stripe_customers
