"""The monitoring queries behind `elt check` on PostgreSQL, as the store runs them and the architecture document shows them."""

FAILED_RUNS = """
-- The latest failed or partial run per pipeline in 24 hours, unless a successful run came after it
-- (then it is history). Partial runs count: records were rejected, a read may have skipped records,
-- or a model failed (including `elt transform` runs, logged as pipeline 'transforms').
SELECT DISTINCT ON (l.pipeline_name) l.pipeline_name, l.id, l.status, l.started_at, l.error_message,
       count(*) OVER (PARTITION BY l.pipeline_name, l.status) AS failures
  FROM pipeline.execution_log l
 WHERE l.status IN ('failed', 'partial') AND l.started_at > now() - interval '24 hours'
   AND NOT EXISTS (SELECT 1 FROM pipeline.execution_log s WHERE s.pipeline_name = l.pipeline_name
                   AND s.status = 'success' AND s.started_at > l.started_at)
 ORDER BY l.pipeline_name, l.id DESC
"""

STREAM_FRESHNESS = """
-- When each stream last finished a read without an error (a run that succeeded or ended partial
-- for other reasons). Not max(_loaded_at): upsert leaves it alone when nothing changed.
SELECT l.pipeline_name, s.key AS stream_name, max(l.completed_at) AS last_read
  FROM pipeline.execution_log l, jsonb_each(l.streams) s
 WHERE l.status IN ('success', 'partial') AND l.completed_at IS NOT NULL AND NOT (s.value ? 'error')
 GROUP BY 1, 2
"""

LAST_RUNS = """
-- Per pipeline: when it last succeeded (compared with its schedule in Python) and first ran.
SELECT pipeline_name, max(started_at) FILTER (WHERE status IN ('success', 'partial')) AS last_success,
       min(started_at) AS first_run
  FROM pipeline.execution_log GROUP BY pipeline_name
"""

OLD_DEAD_LETTERS = """
-- Unresolved dead letters older than the threshold (a day by default), per stream.
SELECT pipeline_name, stream_name, count(*) AS n, min(created_at) AS oldest
  FROM pipeline.dead_letter
 WHERE resolved_at IS NULL AND created_at < now() - %(older_than)s::interval
 GROUP BY pipeline_name, stream_name ORDER BY 1, 2
"""

RUNNING = """
-- Runs still open; those past their pipeline's timeout (plus 5 minutes) are stuck.
SELECT id, pipeline_name, started_at, hostname, pid FROM pipeline.execution_log
 WHERE status = 'running' ORDER BY id
"""

# Per raw table (webhook sources, which have no runs); {} is the quoted table name.
STALE_TABLE_TEMPLATE = "SELECT max(_loaded_at) AS newest FROM {}"

#: The queries behind the checks, as the architecture document shows them (runnable in psql).
CHECK_QUERIES = {
    "failed runs": FAILED_RUNS,
    "missing runs": LAST_RUNS,
    "stale data": STREAM_FRESHNESS,
    "old dead letters": OLD_DEAD_LETTERS.replace("%(older_than)s::interval", "interval '1 day'"),
    "stuck runs": RUNNING,
}
