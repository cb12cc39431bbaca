-- Issues with their repository, merged incrementally: only issues updated since the last build are re-read.
-- materialized: incremental
-- unique_key: id
-- watermark: updated_at
-- tests: unique(id), relationships(repository_id: stg.github_repos.id)
SELECT i.id, i.repository_id, r.full_name AS repository, i.number, i.title, i.state, i.first_label, i.updated_at
FROM stg.github_issues AS i
JOIN stg.github_repos AS r ON r.id = i.repository_id
