-- What each run built in the transform layer, model by model:
-- {"mart.orders": {"status": "success", "rows": 120, "seconds": 0.4, "action": "rebuilt"}, ...}
-- Kept apart from error_detail so a successful run's figures are not read as errors.
ALTER TABLE pipeline.execution_log ADD COLUMN IF NOT EXISTS models jsonb;
