-- Issue 17: webhook sources. One row per declared WebhookSource (its raw table), updated in
-- the same transaction as each group of events it stores, so the counts and
-- the raw table cannot disagree. `elt status` prints it; `elt check` flags a
-- source whose last event is older than its declared expectation.
CREATE TABLE IF NOT EXISTS pipeline.webhook_sources (
    -- raw.<table_name> holds the events; a source (sender) may have several entities
    table_name          text        PRIMARY KEY,
    source              text        NOT NULL,
    -- distinct events stored in raw.<table_name>
    events              bigint      NOT NULL DEFAULT 0,
    -- deliveries of an event already stored (acknowledged, not stored again)
    duplicates          bigint      NOT NULL DEFAULT 0,
    -- requests refused with 401 (bad or missing signature) and with 400/413/415
    rejected_signature  bigint      NOT NULL DEFAULT 0,
    rejected_other      bigint      NOT NULL DEFAULT 0,
    first_event_at      timestamptz,
    -- received time of the newest stored event
    last_event_at       timestamptz,
    -- when the server first served the source: a source that never got an
    -- event is silent since then
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
