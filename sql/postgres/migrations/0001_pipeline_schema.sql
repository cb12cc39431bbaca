-- elt's own bookkeeping schema. Applied once, in one transaction, by
-- `elt migrate` (or automatically before the first run). Never edit a
-- migration that has shipped: add the next numbered file instead.

-- Each schema is created only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE
-- privilege on the database even when the schema exists, which a role owning only its
-- schemas lacks (README, "Database roles and grants"). Same effect as the plain form this
-- file had, so databases that applied it earlier are unaffected.
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['pipeline', 'raw', 'stg'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = name) THEN
            EXECUTE format('CREATE SCHEMA %I', name);
        END IF;
    END LOOP;
END $$;

-- One row per run of a pipeline, written at the start (status 'running') and
-- closed at the end. A row still 'running' with no live process behind it is
-- marked 'failed' (abandoned) by the next run of the same pipeline.
CREATE TABLE IF NOT EXISTS pipeline.execution_log (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_name       text        NOT NULL,
    started_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz,
    status              text        NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'success', 'failed', 'partial', 'skipped')),
    rows_extracted      bigint      NOT NULL DEFAULT 0,
    rows_loaded         bigint      NOT NULL DEFAULT 0,
    rows_transformed    bigint      NOT NULL DEFAULT 0,
    rows_rejected       bigint      NOT NULL DEFAULT 0,
    error_message       text,
    error_detail        jsonb,
    -- how the run was started: cli, schedule, replay, api
    trigger             text        NOT NULL DEFAULT 'cli',
    -- per-stream counters and watermarks, for `elt status` and the person on call
    streams             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    hostname            text,
    pid                 integer,
    execution_duration_seconds numeric GENERATED ALWAYS AS
        (EXTRACT(EPOCH FROM (completed_at - started_at))) STORED
);
CREATE INDEX IF NOT EXISTS execution_log_pipeline_started
    ON pipeline.execution_log (pipeline_name, started_at DESC);
-- `elt check` looks for failures and stuck runs; keep that cheap.
CREATE INDEX IF NOT EXISTS execution_log_status
    ON pipeline.execution_log (status) WHERE status IN ('running', 'failed', 'partial');

-- Every record that could not be loaded, exactly as received, with the reason.
-- Resolved by `elt dead-letter replay` (loaded after a fix) or `resolve`
-- (handled without loading); never deleted by elt.
CREATE TABLE IF NOT EXISTS pipeline.dead_letter (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_name   text        NOT NULL,
    stream_name     text,
    run_id          bigint REFERENCES pipeline.execution_log (id),
    batch_id        text,
    source_record   jsonb,
    error_message   text        NOT NULL,
    error_detail    jsonb,
    -- md5 of the record: the same bad record re-read by a lookback overlap is
    -- recorded once while it is unresolved.
    record_hash     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    resolved_by     text,
    resolution      text
);
CREATE INDEX IF NOT EXISTS dead_letter_unresolved
    ON pipeline.dead_letter (pipeline_name, stream_name) WHERE resolved_at IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS dead_letter_unresolved_once
    ON pipeline.dead_letter (pipeline_name, stream_name, record_hash) WHERE resolved_at IS NULL;

-- Per pipeline and stream: the watermark (key 'watermark'), the observed
-- top-level fields (key 'schema'), and whatever else a stream keeps (file
-- manifests, cursors). Written in the same transaction as the rows it
-- describes, so data and state cannot disagree.
CREATE TABLE IF NOT EXISTS pipeline.state (
    pipeline_name   text        NOT NULL,
    stream_name     text        NOT NULL,
    key             text        NOT NULL,
    value           jsonb       NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by_run  bigint,
    PRIMARY KEY (pipeline_name, stream_name, key)
);

-- New or changed top-level fields seen in a stream's records. The records
-- themselves are never dropped (they are in _raw_payload); this is the trail.
CREATE TABLE IF NOT EXISTS pipeline.schema_changes (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_name   text        NOT NULL,
    stream_name     text        NOT NULL,
    table_name      text        NOT NULL,
    field_name      text        NOT NULL,
    change          text        NOT NULL CHECK (change IN ('initial', 'added', 'type_changed')),
    old_type        text,
    new_type        text,
    run_id          bigint,
    detected_at     timestamptz NOT NULL DEFAULT now()
);
