-- One row per problem `elt check` / `elt serve` has alerted about: the alert is sent
-- once, repeated only after the reminder interval, and "resolved" is sent when the
-- problem is gone (resolved_at set). A problem that comes back opens a new row.
CREATE TABLE IF NOT EXISTS pipeline.alerts (
    id           bigserial   PRIMARY KEY,
    key          text        NOT NULL,        -- check:subject, e.g. missing_run:shop
    check_name   text        NOT NULL,
    subject      text        NOT NULL,
    detail       text        NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_sent    timestamptz,                 -- NULL: not delivered yet (retried next cycle)
    sent_count   int         NOT NULL DEFAULT 0,
    resolved_at  timestamptz
);
-- At most one open alert per problem.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_key ON pipeline.alerts (key) WHERE resolved_at IS NULL;
