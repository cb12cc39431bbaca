-- Issue 16: the bytes a run's queries processed, as BigQuery bills them (the BigQuery
-- destination fills it; on PostgreSQL it stays NULL: nothing is billed per byte).
ALTER TABLE pipeline.execution_log ADD COLUMN IF NOT EXISTS bytes_processed bigint;
