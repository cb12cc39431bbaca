-- Per incremental model: when it was last built from scratch, and the horizon of its last
-- read. The horizon is the start time of the oldest transaction that was still running when
-- the model read its inputs: rows that transaction commits later carry an earlier _loaded_at
-- (now() is the transaction's start), so the next merge reads back to it instead of skipping them.
CREATE TABLE IF NOT EXISTS pipeline.model_state (
    relation         text        PRIMARY KEY,   -- schema.name of the model
    full_refresh_at  timestamptz,               -- last build from scratch (first build, --full-refresh)
    merged_at        timestamptz,               -- last incremental merge
    horizon          timestamptz                -- see above; NULL: nothing was running
);
