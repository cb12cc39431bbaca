-- Honest figures (rows_loaded counts only what was written), dead letters that
-- say whether they hold a record or describe a problem, and a schema trail
-- that records fields that disappear.

-- Records already stored exactly as they are (re-read overlaps, re-runs), and
-- records that repeated a key within a batch (only the last version is written).
-- rows_loaded = inserted + updated; these two are counted apart.
ALTER TABLE pipeline.execution_log ADD COLUMN IF NOT EXISTS rows_unchanged bigint NOT NULL DEFAULT 0;
ALTER TABLE pipeline.execution_log ADD COLUMN IF NOT EXISTS rows_collapsed bigint NOT NULL DEFAULT 0;

-- 'record': a record that failed validation; `elt dead-letter replay` loads it
-- once the code is fixed. 'problem': something the extractor could not read
-- (a rejected file, a ragged or undecodable line): there is no record to
-- replay, the source must be read again.
ALTER TABLE pipeline.dead_letter ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'record'
    CHECK (kind IN ('record', 'problem'));
-- Letters written before this column: the file extractor's problems hold only
-- where they were (file, line, the raw row).
UPDATE pipeline.dead_letter SET kind = 'problem'
 WHERE jsonb_typeof(source_record) = 'object' AND source_record ? 'file'
   AND NOT EXISTS (SELECT 1 FROM jsonb_object_keys(source_record) k WHERE k NOT IN ('file', 'line', 'row'));

-- 'removed': a field no record of a whole read carried any more.
ALTER TABLE pipeline.schema_changes DROP CONSTRAINT IF EXISTS schema_changes_change_check;
ALTER TABLE pipeline.schema_changes ADD CONSTRAINT schema_changes_change_check
    CHECK (change IN ('initial', 'added', 'removed', 'type_changed'));
