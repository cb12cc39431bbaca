-- The latest version of each issue, typed. Replaces the view elt generates for the
-- append_dedup stream (raw.github_issues keeps every version it has seen).
-- materialized: view
-- unique_key: id
-- tests: unique(id), not_null(repository_id), accepted_values(state: open, closed)
SELECT DISTINCT ON (_raw_payload ->> 'id')
    (_raw_payload ->> 'id')::bigint AS id,
    (_raw_payload ->> 'repository_id')::bigint AS repository_id,
    (_raw_payload ->> 'number')::int AS number,
    _raw_payload ->> 'title' AS title,
    _raw_payload ->> 'state' AS state,
    _raw_payload -> 'labels' -> 0 ->> 'name' AS first_label,
    (_raw_payload ->> 'updated_at')::timestamptz AS updated_at
FROM raw.github_issues
ORDER BY _raw_payload ->> 'id', (_raw_payload ->> 'updated_at')::timestamptz DESC, _row_seq DESC
