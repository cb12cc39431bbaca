"""The decisions a requirements file leads to, each with the reason written out.

Pattern (the seed's table), and per source: incremental or full refresh,
write strategy, batch size, retry policy and schedule, plus the full-sync
arithmetic for rate-limited APIs and advice for very large or real-time
sources. The architecture document prints these reasons as they are.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

from elt.generator.requirements import Entity, Requirements, Source, env_name, freshness_seconds

FULL_REFRESH_BELOW = 10_000
LARGE_TABLE = 10_000_000


@dataclass
class Decision:
    topic: str
    choice: str
    reason: str
    #: The requirements cannot be met as written: `elt init` writes the project, says why, and exits 1.
    infeasible: bool = False


@dataclass
class StreamPlan:
    source: Source
    entity: Entity
    incremental: bool
    write_strategy: str
    batch_size: int
    decisions: list[Decision] = field(default_factory=list)
    #: Read through trigger-based change capture (CdcExtractor), not by re-querying the table.
    cdc: bool = False

    @property
    def table(self) -> str:
        return f"{self.source.name}_{self.entity.name}"

    @property
    def cursor(self) -> str | None:
        return self.entity.cursor if self.incremental else None


@dataclass
class FullSync:
    rate: float
    page_size: int
    rows: int
    pages: int
    seconds: float
    allowed: float | None

    @property
    def breaks_freshness(self) -> bool:
        return self.allowed is not None and self.seconds > self.allowed

    def sentence(self) -> str:
        return (f"At {self.rate:g} requests/s and {self.page_size} records/request, a full sync of {self.rows:,} rows"
                f" takes {self.pages:,} requests, {_duration(self.seconds)}.")


@dataclass
class SourcePlan:
    source: Source
    streams: list[StreamPlan]
    schedule: str | None
    every: str | None
    retry: Decision
    full_sync: FullSync | None = None
    advice: list[Decision] = field(default_factory=list)
    tz: str = "UTC"

    @property
    def pipeline(self) -> str:
        return self.source.name

    @property
    def frequency(self) -> str:
        return f"cron {self.schedule}" if self.schedule else f"every {self.every}" if self.every else "on demand"

    @property
    def sync_seconds(self) -> float:
        """A usual sync's estimated duration: requests at the rate limit for APIs, else rows at a modest speed."""
        volume = self.source.volume
        rate = self.source.rate_limit.per_second() if self.source.type == "rest_api" else None
        if rate:
            requests = max(math.ceil(volume.rows_per_sync / self.source.rate_limit.page_size), len(self.streams))
            return requests / rate
        return volume.rows_per_sync / 5_000 + 5 * len(self.streams)  # 5,000 rows/s, a few seconds per stream


@dataclass
class Plan:
    requirements: Requirements
    pattern: Decision
    sources: list[SourcePlan]
    deployment: Decision
    destination: Decision


def plan(requirements: Requirements) -> Plan:
    return Plan(requirements, _pattern(requirements), [_source(s, requirements) for s in requirements.sources],
                _deployment(requirements), _destination(requirements))


def _deployment(req: Requirements) -> Decision:
    runtime = req.constraints.runtime
    if runtime == "supabase":
        return Decision("deployment", "extract on a small host, transform with pg_cron",
                        "Supabase runs SQL, not Python: `elt serve` (or cron) on the smallest VPS or container loads"
                        " the sources; SQL-only model refreshes can run inside the database with `elt deploy pg-cron`")
    if runtime == "serverless":
        return Decision("deployment", "one `elt run` per schedule, no long-running process",
                        "the platform's scheduler starts `elt run PIPELINE` (see `elt deploy cron` for the times);"
                        " the run log and `elt check` work the same, and the database lock prevents overlaps")
    return Decision("deployment", "`elt serve` under systemd on the VPS",
                    "one long-running process with the schedule, timeouts and alerts; `elt deploy systemd` writes"
                    " the unit (restart on failure, secrets from .env)")


def _destination(req: Requirements) -> Decision:
    kind = req.destination.kind
    if kind == "bigquery":
        return Decision("destination", "BigQuery",
                        "every pipeline loads into BigQuery (`destination=BigQuery()`: project, dataset prefix and"
                        " location from ELT_BIGQUERY_*, credentials from GOOGLE_APPLICATION_CREDENTIALS); each layer is"
                        " a dataset, batches arrive by load jobs (no streaming inserts) into raw tables partitioned by"
                        " day of _loaded_at and clustered by key, and the sql/ models (written in PostgreSQL's dialect)"
                        " are transpiled by sqlglot and built as views, tables and MERGEs; every query carries the"
                        " maximum_bytes_billed guard")
    if kind == "supabase":
        return Decision("destination", "Supabase (PostgreSQL)", "set ELT_DATABASE_URL to the Supabase connection"
                        " string (the pooler's session mode); everything else is plain PostgreSQL")
    return Decision("destination", "PostgreSQL", "the raw, staging, mart and reporting layers and elt's own run log,"
                    " dead letters and state live in one database, so data and bookkeeping cannot disagree")


def _pattern(req: Requirements) -> Decision:
    types = {s.type for s in req.sources}
    realtime = any(s.freshness in ("real_time", "near_real_time") for s in req.sources)
    if "webhook" in types and len(types) > 1:
        return Decision("pattern", "hybrid", "webhook events arrive continuously while the other sources are polled in"
                        " batches: WebhookSources served by `elt serve` beside the scheduled pipelines, meeting in"
                        " the same raw schema")
    if types == {"webhook"}:
        return Decision("pattern", "event-driven", "every source pushes events (webhooks): each event is stored in"
                        " raw as it comes, before the sender is answered (WebhookSource, served by `elt serve`), and"
                        " the models are rebuilt shortly after new events")
    if types <= {"file_drop", "manual"}:
        return Decision("pattern", "file processing", "every source is a file: a drop folder per source, each file"
                        " loaded once and tracked in a manifest, bad files quarantined in the dead-letter table")
    if any(uses_cdc(s) for s in req.sources):
        return Decision("pattern", "CDC", "a database source needs data within minutes: trigger-based change capture"
                        " reads every insert, update and delete instead of re-scanning tables")
    if len(req.sources) == 1:
        if types == {"rest_api"}:
            return Decision("pattern", "API-to-DB sync", "one REST API into one database: paginated, rate-limited"
                            " extraction with incremental cursors")
        return Decision("pattern", "simple ELT", "one source, one destination: extract, load raw, transform in SQL")
    reason = "several sources loaded independently into one raw schema and joined in the transform layer"
    if realtime:
        reason += "; the fastest freshness need sets the busiest schedule"
    return Decision("pattern", "multi-source ELT", reason)


def _schedule(source: Source) -> tuple[str | None, str | None, Decision]:
    minute = zlib.crc32(source.name.encode()) % 50 + 5  # spread sources over the hour, away from :00
    if source.freshness == "real_time":
        return None, "1m", Decision("schedule", "every 1m", "real-time need: events are received continuously and"
                                    " loaded every minute")
    if source.freshness == "near_real_time":
        return None, "5m", Decision("schedule", "every 5m", "near-real-time need: a sync every five minutes")
    if source.freshness == "hourly":
        return f"{minute} * * * *", None, Decision("schedule", f"cron {minute} * * * *", "hourly need; minute"
                                                   f" {minute} spreads sources so they do not all start at :00")
    if source.freshness == "daily":
        return f"{minute} 5 * * *", None, Decision("schedule", f"cron {minute} 5 * * *", "daily need: early morning,"
                                                   " before people look at the reports")
    seconds = freshness_seconds(source.freshness)
    if seconds is None:
        return None, None, Decision("schedule", "on demand", "no freshness need: run with `elt run` when wanted")
    # A duration ("15m", "6h"): run that often; whole days as a morning cron.
    if seconds % 86400 == 0:
        days = seconds // 86400
        cron = f"{minute} 5 */{days} * *" if days > 1 else f"{minute} 5 * * *"
        return cron, None, Decision("schedule", f"cron {cron}", f"data at most {source.freshness} old: early morning")
    every = source.freshness
    return None, every, Decision("schedule", f"every {every}", f"data at most {source.freshness} old: a sync every"
                                 f" {every}")


def _source(source: Source, req: Requirements) -> SourcePlan:
    schedule, every, schedule_decision = _schedule(source)
    streams = [_stream(source, entity) for entity in source.entities]
    retry = {
        "rest_api": Decision("retry", "5 retries, exponential backoff with jitter", "429/5xx/timeouts are usually"
                             " transient; Retry-After and rate-limit reset headers are honoured; other 4xx fail at once"),
        "webhook": Decision("retry", "the sender retries", "an event is acknowledged only once it is committed (or"
                            " fsync'd to the local spool while the database is down); anything refused or unanswered"
                            " is retried by the sender, and missed deliveries can be replayed from its dashboard"),
        "database": Decision("retry", "next scheduled run", "a failed read leaves committed pages loaded and the"
                             " watermark exact; the next run continues (keyset pages are short queries)"),
    }.get(source.type, Decision("retry", "bad files to dead letter", "a file that cannot be read is quarantined with"
                                " its line and reason; the other files still load; a fixed file loads as a new version"))
    result = SourcePlan(source, streams, schedule, every, retry, advice=[schedule_decision], tz=req.timezone)
    if source.type == "rest_api":
        rate = source.rate_limit.per_second()
        if rate:
            pages = max(1, math.ceil(source.volume.total_rows / source.rate_limit.page_size))
            allowed = freshness_seconds(source.freshness)
            result.full_sync = FullSync(rate, source.rate_limit.page_size, source.volume.total_rows, pages,
                                        pages / rate, allowed)
            incremental_pages = max(1, math.ceil(source.volume.rows_per_sync / source.rate_limit.page_size))
            if result.full_sync.breaks_freshness:
                result.advice.append(Decision(
                    "full sync", "backfill once, then incremental",
                    f"{result.full_sync.sentence()} That is longer than the {source.freshness.replace('_', ' ')} need"
                    f" ({_duration(allowed or 0)}). Load incrementally by each entity's cursor: a sync then reads about"
                    f" {source.volume.rows_per_sync:,} rows, {incremental_pages:,} requests,"
                    f" {_duration(incremental_pages / rate)}. Run the first full sync once as a backfill at a quiet"
                    " time (`elt run --full-refresh`), or in windows with `elt run --since`."))
            else:
                result.advice.append(Decision("full sync", "fits the freshness need", result.full_sync.sentence()))
    scheme = source.access.partition("://")[0].lower() if "://" in source.access else ""
    if source.type in ("file_drop", "manual") and scheme in ("sftp", "ftp", "ftps", "scp", "smb", "s3", "gs"):
        result.advice.append(Decision(
            "access", "mount it, then it is a folder",
            f"elt reads folders, not {scheme.upper()} servers: mount {source.access} on the host (sshfs for SFTP,"
            " curlftpfs for FTP, mount.cifs for SMB, rclone mount for S3/GCS) or mirror it there on a schedule"
            f" (rclone sync, lftp mirror), then set {env_name(source.name)}_FOLDER to that folder"))
    if source.access_had_password:
        result.advice.append(Decision(
            "secret in access", "masked; the real URL goes in .env",
            f"the access URL of {source.name} holds a password: it is masked (***) in every generated file;"
            f" put the real URL in .env ({env_name(source.name)}_DATABASE_URL for a database), never in a file you commit"))
    if source.type == "rest_api":
        result.advice += _quota_and_sync_time(source)
    if source.volume.total_rows > LARGE_TABLE:
        result.advice.append(Decision(
            "large source", "incremental only, bulk backfill in windows",
            f"{source.volume.total_rows:,} rows: never re-read it whole. Index (cursor, key) on the source, keep"
            " batches at 10,000 rows (memory stays flat), backfill in windows with `elt run --since`"
            + (". BigQuery's raw tables are partitioned by day of _loaded_at: filter staging models on _loaded_at so"
               " their scans prune partitions." if req.destination.kind == "bigquery" else
               ", and consider partitioning the raw table by month (pg_partman) or BigQuery once it passes a few hundred million"
               " rows.")))
    if source.freshness == "real_time" and source.type != "webhook" and not uses_cdc(source):
        result.advice.append(Decision(
            "real time", "webhook ingestion instead of polling",
            "polling cannot give real time without hammering the source; if it can send webhooks, receive them"
            " with a WebhookSource in pipelines.py (served by `elt serve`; each event stored before it is"
            " acknowledged)"))
    return result


def _stream(source: Source, entity: Entity) -> StreamPlan:
    decisions: list[Decision] = []
    small = source.volume.total_rows < FULL_REFRESH_BELOW
    tracked = source.change_tracking and bool(entity.cursor)
    if source.type == "webhook":
        incremental, strategy = False, "append"
        decisions.append(Decision("incremental", "each event once", "events are pushed, not read: each is stored"
                                  " once by its event id (a sender's retry of the same event is acknowledged, not"
                                  " stored again)"))
        decisions.append(Decision("write strategy", "append", "events are immutable facts; staging keeps the latest"
                                  " version per key"))
    elif source.type in ("file_drop", "manual"):
        incremental, strategy = False, "append"
        decisions.append(Decision("incremental", "new files only", "each file is loaded once (manifest by path,"
                                  " size and hash); nothing is re-read"))
        decisions.append(Decision("write strategy", "append", "files and events are immutable facts; staging keeps"
                                  " the latest version per key"))
    elif uses_cdc(source):
        incremental, strategy = True, "append"
        decisions.append(Decision("incremental", "change capture by seq", "the data is needed within minutes:"
                                  " `elt cdc install` puts a trigger on the table that records every insert, update"
                                  " and delete in elt_cdc.changes; each run reads the new changes by sequence id"))
        decisions.append(Decision("write strategy", "append", "every change is a fact kept in raw; staging shows"
                                  f" the current row per {entity.primary_key}, deletes included"))
        batch = 10_000
        decisions.append(Decision("batch size", f"{batch:,}", "one transaction per 10,000 changes keeps memory flat"))
        return StreamPlan(source, entity, incremental, strategy, batch, decisions, cdc=True)
    elif small or not tracked:
        incremental = False
        why = (f"under {FULL_REFRESH_BELOW:,} rows: re-reading everything is cheap and catches deletes" if small
               else "the source has no change tracking (no cursor field): only a full read sees every change")
        decisions.append(Decision("incremental", "full refresh", why))
        strategy = "replace"
        decisions.append(Decision("write strategy", "replace", "each run loads a complete copy; it is swapped in"
                                  " within one transaction so readers never see half a table"))
    else:
        incremental = True
        decisions.append(Decision("incremental", f"by {entity.cursor}", f"{source.volume.total_rows:,} rows with a"
                                  f" change-tracking field: read only what changed since the watermark, with a lookback"
                                  " for late commits"))
        if source.type == "database":
            strategy = "upsert"
            decisions.append(Decision("write strategy", "upsert", "a database table is current state: one row per"
                                      f" {entity.primary_key}, updated in place"))
        else:
            strategy = "append_dedup"
            decisions.append(Decision("write strategy", "append_dedup", "API records keep their history in raw; the"
                                      " staging view shows the latest version per key"))
    batch = 10_000
    decisions.append(Decision("batch size", f"{batch:,}", "one transaction per 10,000 records keeps memory flat and"
                              " a failed batch small"))
    return StreamPlan(source, entity, incremental, strategy, batch, decisions)


def _quota_and_sync_time(source: Source) -> list[Decision]:
    """Whether each sync fits between two syncs at the rate limit, and the syncs of a day fit the daily quota."""
    allowed = freshness_seconds(source.freshness)
    if allowed is None:
        return []
    # At least a request per entity, and a page per page_size changed rows: a lower bound, so a flag is certain.
    requests = max(math.ceil(source.volume.rows_per_sync / source.rate_limit.page_size), len(source.entities))
    found = []
    rate = source.rate_limit.per_second()
    if rate and requests / rate > allowed:
        found.append(Decision(
            "incremental sync", "infeasible at this rate limit",
            f"Each sync reads about {source.volume.rows_per_sync:,} changed rows: {requests:,} requests at {rate:.3g}/s take"
            f" {_duration(requests / rate)}, longer than the {source.freshness.replace('_', ' ')} between syncs"
            f" ({_duration(allowed)}). Ask for a higher rate limit or larger pages, or accept staler data.",
            infeasible=True))
    quota = source.rate_limit.requests_per_day
    runs = math.ceil(86400 / allowed)
    if quota and runs * requests > quota:
        found.append(Decision(
            "request quota", "infeasible within the daily quota",
            f"{runs:,} syncs a day × {requests:,} requests = {runs * requests:,} requests, more than the"
            f" {quota:,.0f} a day the API allows. Sync at most every {_duration(86400 * requests / quota)}, or raise"
            " the quota.", infeasible=True))
    return found


def uses_cdc(source: Source) -> bool:
    """A PostgreSQL source needed within minutes is read through trigger-based change capture."""
    return (source.type == "database" and source.freshness in ("real_time", "near_real_time")
            and source.format.strip().lower() in ("", "postgres", "postgresql", "supabase"))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
