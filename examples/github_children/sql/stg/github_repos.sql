-- materialized: view
-- unique_key: id
-- tests: unique(id)
SELECT
    (_raw_payload ->> 'id')::bigint AS id,
    _raw_payload ->> 'full_name' AS full_name,
    _raw_payload ->> 'language' AS language,
    (_raw_payload ->> 'private')::boolean AS private
FROM raw.github_repos
