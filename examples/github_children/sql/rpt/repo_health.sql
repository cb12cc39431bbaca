-- Per repository: open work and how much of it is bugs.
-- materialized: materialized_view
-- unique_key: repository
-- tests: unique(repository), not_null(open_issues)
SELECT
    repository,
    count(*) FILTER (WHERE state = 'open') AS open_issues,
    count(*) FILTER (WHERE state = 'closed') AS closed_issues,
    round(avg((first_label = 'bug')::int) FILTER (WHERE state = 'open'), 3) AS open_bug_share,
    max(updated_at) AS last_activity
FROM mart.issues
GROUP BY repository
