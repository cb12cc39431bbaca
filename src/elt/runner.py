"""The runner: the one place that sequences a run.

Open the log row, take the pipeline's lock, close abandoned rows, then per
stream: read state, pull batches, validate, hand each to the loader (rows and
watermark in one transaction), and finally close the log row with true
figures. Dead-letter replays run through the same frame.
"""

from __future__ import annotations

import threading
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from elt import secrets
from elt.errors import ConfigError, EltError
from elt.extractors.base import Batch, Extractor
from elt.loaders.base import DeadLetter, Loader, LoadResult, RunSummary, StreamTarget
from elt.logs import get_logger
from elt.pipeline import Pipeline
from elt.prefetch import prefetch
from elt.progress import LogProgress, Progress, default_progress
from elt.records import coerce_cursor
from elt.schema import diff_fields, removed_fields
from elt.state import StreamState, UnsortedStream, Watermark, WatermarkTracker
from elt.validation import PreparedBatch, Rejected, prepare

if TYPE_CHECKING:  # sqlglot and the model machinery load only when a run builds models
    from elt.transforms.build import BuildResult

_stop = threading.Event()


class Interrupted(SystemExit):
    """A stop was requested (SIGTERM): raised between batches, so the batch in flight commits first."""


def request_stop() -> None:
    """Ask running pipelines to stop after the batch they are loading (signal handlers call this)."""
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def _check_stop() -> None:
    if _stop.is_set():
        raise Interrupted(143)


#: The name `elt transform` runs are logged under in ``pipeline.execution_log``.
TRANSFORM_RUN = "transforms"

#: Process exit code for each run status (``elt run`` exits with the worst).
EXIT_CODES = {"success": 0, "failed": 1, "partial": 3, "skipped": 4}


def worst_exit_code(codes: Sequence[int]) -> int:
    """The exit code of several runs: failed over partial over skipped over success."""
    for code in (EXIT_CODES["failed"], EXIT_CODES["partial"], EXIT_CODES["skipped"]):
        if code in codes:
            return code
    return 0


@dataclass
class StreamFigures:
    extracted: int = 0
    #: Rows written: inserted + updated.
    loaded: int = 0
    inserted: int = 0
    updated: int = 0
    #: Records already stored exactly as they are (nothing written).
    unchanged: int = 0
    #: Records that repeated a key within a batch (only the last version written).
    collapsed: int = 0
    rejected: int = 0
    batches: int = 0
    #: Key reconciliation (`elt reconcile`): rows newly marked deleted, and rows back in the source.
    deleted: int | None = None
    restored: int | None = None
    #: Replay: dead letters not loaded because a newer version of the key is stored.
    superseded: int | None = None
    watermark: Any = None
    error: str | None = None
    #: Why the read may have skipped records (the run is partial).
    incomplete: list[str] | None = None
    #: Source faults the read met (REST: retries by cause, URLs failed for good); see Extractor.fault_report.
    faults: dict[str, Any] | None = None
    #: The stream read sample data, not its real source (Extractor.sample_data).
    sample: str | None = None

    def not_applied(self) -> None:
        """A stream-atomic read that did not reach its table: nothing loaded (what was read stays counted)."""
        self.loaded = self.inserted = self.updated = self.unchanged = self.collapsed = 0

    def add(self, result: LoadResult) -> None:
        self.batches += 1
        self.loaded += result.loaded
        self.inserted += result.inserted
        self.updated += result.updated
        self.unchanged += result.unchanged
        self.collapsed += result.collapsed

    def as_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if v is not None}
        if isinstance(self.watermark, Watermark):
            data["watermark"] = self.watermark.to_json()["value"]
        return data


@dataclass
class RunResult:
    """The outcome of one run, as closed in ``pipeline.execution_log``."""

    pipeline: str
    run_id: int
    status: str
    summary: RunSummary
    streams: dict[str, StreamFigures] = field(default_factory=dict)
    #: The models built in this run, when it built any.
    models: BuildResult | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]


class _Run:
    """The counters of a run in progress, and how it closed."""

    def __init__(self, pipeline: str, run_id: int) -> None:
        self.pipeline = pipeline
        self.run_id = run_id
        self.streams: dict[str, StreamFigures] = {}
        self.failures: dict[str, dict[str, Any]] = {}
        self.over_ratio: list[str] = []
        #: Per stream: why a replay rejected records again. They were asked for by name, so no
        #: ratio allows it: the replay fails (the others stay loaded).
        self.rejected_again: list[str] = []
        #: Per stream: why its read may have skipped records, or what a replay left unloaded.
        self.incomplete: dict[str, list[str]] = {}
        #: Set when another run held the lock: the message logged for the skip.
        self.skipped: str | None = None
        #: What was written to the log row when the run closed.
        self.closed: RunSummary | None = None
        #: The models built after the loads, when the pipeline has any.
        self.transforms: BuildResult | None = None

    def fail(self, stream: str, exc: Exception) -> str:
        """Record a stream's failure (message and traceback, secrets masked); return the message."""
        message = secrets.redact(str(exc) if isinstance(exc, EltError) else f"{type(exc).__name__}: {exc}")
        self.streams.setdefault(stream, StreamFigures()).error = message
        self.failures[stream] = {"error": message, "traceback": secrets.redact(traceback.format_exc())}
        return message

    def result(self) -> RunResult:
        assert self.closed is not None
        return RunResult(self.pipeline, self.run_id, self.closed.status, self.closed, self.streams, self.transforms)

    def summary(self, status: str = "running") -> RunSummary:
        figures = self.streams.values()
        return RunSummary(
            status=status,
            rows_extracted=sum(f.extracted for f in figures),
            rows_loaded=sum(f.loaded for f in figures),
            rows_rejected=sum(f.rejected for f in figures),
            rows_transformed=self.transforms.rows_transformed if self.transforms else 0,
            rows_unchanged=sum(f.unchanged for f in figures),
            rows_collapsed=sum(f.collapsed for f in figures),
            streams={name: f.as_json() for name, f in self.streams.items()},
        )

    def close(self) -> RunSummary:
        model_failures = self.transforms.failures if self.transforms else {}
        if self.failures or self.over_ratio or self.rejected_again:
            status = "failed"
        elif model_failures and not self.streams and len(model_failures) == len(self.transforms.models):  # type: ignore[union-attr]
            status = "failed"  # a transform-only run that built nothing
        elif model_failures or self.incomplete or any(f.rejected for f in self.streams.values()):
            # What was read is loaded; what is missing is named in the message.
            status = "partial"
        else:
            status = "success"
        summary = self.summary(status)
        # Errors raised by extractors usually name their stream already; say it once.
        messages = [f["error"] if f["error"].startswith(f"stream {name!r}") else f"stream {name!r}: {f['error']}"
                    for name, f in self.failures.items()]
        messages += self.over_ratio
        messages += self.rejected_again
        messages += [f"stream {name!r}: {reason}" for name, reasons in self.incomplete.items() for reason in reasons]
        messages += [f"model {relation}: {error}" for relation, error in model_failures.items()]
        if status == "partial" and summary.rows_rejected:
            rejected = summary.rows_rejected
            messages.append(f"{rejected} record(s) rejected to pipeline.dead_letter (see `elt dead-letter list`)")
        if messages:
            summary.error_message = "; ".join(messages)
        if self.failures:
            summary.error_detail = {"streams": self.failures}
        if self.transforms:
            summary.models = self.transforms.as_json()
        return summary


class Runner:
    """Runs one pipeline: ``Runner(pipeline).run()``."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        project_dir: Path | None = None,
        streams: Sequence[str] | None = None,
        full_refresh: bool = False,
        since: Any = None,
        trigger: str = "cli",
        loader: Loader | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.project_dir = project_dir
        self.stream_names = list(streams or [])
        self.full_refresh = full_refresh
        self.since = since
        self.trigger = trigger
        self._loader = loader
        self.progress = progress
        #: Batches read and validated ahead of the one loading (memory: this many batches).
        self.prefetch_depth = 2
        self.log = get_logger(pipeline=pipeline.name)
        for name in self.stream_names:
            pipeline.stream(name)  # unknown names fail before anything starts

    # --- the frame every run shares ----------------------------------------------

    def _open_loader(self) -> Loader:
        if self._loader is not None:
            return self._loader
        loader = self.pipeline.destination.loader(self.project_dir)  # type: ignore[union-attr]
        self.log.info("database", using=loader.description)
        return loader

    @contextmanager
    def _frame(self, trigger: str, name: str | None = None) -> Iterator[tuple[Loader, _Run]]:
        """Log row + lock around a run of ``name`` (default: the pipeline's name).

        The run yielded has ``skipped`` set when another run holds the lock.
        """
        name = name or self.pipeline.name
        loader = self._open_loader()
        owns_loader = self._loader is None
        try:
            loader.store.migrate()
            run_id = loader.store.start_run(name, trigger)
            structlog.contextvars.bind_contextvars(pipeline=name, run_id=run_id)
            if not loader.store.try_lock(name):
                other = loader.store.running_elsewhere(name, run_id)
                where = (f" (run {other['run_id']} started {other['started_at']:%Y-%m-%d %H:%M:%S} UTC on"
                         f" {other['hostname']}, pid {other['pid']})") if other else ""
                message = f"another run of {name} is in progress{where}; this run was skipped"
                self.log.warning(message)
                run = _Run(name, run_id)
                run.skipped = message
                run.closed = RunSummary(status="skipped", error_message=message)
                loader.store.finish_run(run_id, run.closed)
                yield loader, run
                return
            try:
                abandoned = loader.store.mark_abandoned(name, run_id)
                if abandoned:
                    self.log.warning("closed runs left 'running' by a stopped process as failed (abandoned)",
                                     count=abandoned)
                run = _Run(name, run_id)
                try:
                    yield loader, run
                except BaseException as exc:
                    # Ctrl-C, SIGTERM turned into SystemExit, or a bug in elt itself:
                    # the log row must not be left 'running'.
                    summary = run.summary("failed")
                    summary.error_message = secrets.redact(
                        "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else f"{type(exc).__name__}: {exc}"
                    )
                    summary.error_detail = {"traceback": secrets.redact(traceback.format_exc())}
                    loader.store.finish_run(run_id, summary)
                    raise
                else:
                    run.closed = run.close()
                    loader.store.finish_run(run_id, run.closed)
            finally:
                loader.store.unlock(name)
        finally:
            structlog.contextvars.unbind_contextvars("pipeline", "run_id")
            if owns_loader:
                loader.close()

    # --- a normal run ---------------------------------------------------------------

    def check_since(self) -> None:
        """Raise a ConfigError (a usage error) when a selected stream's cursor cannot take ``since``.

        Called before any run starts (``elt run --since``), so a typo never opens a run
        that can only fail. The cursor's kind is resolved as a run would (declared,
        stored, the raw table's column), so this reads the destination.
        """
        if self.since is None or self.full_refresh:
            return
        streams = [self.pipeline.stream(n) for n in self.stream_names] or list(self.pipeline.streams)
        try:
            loader = self._open_loader()
        except Exception:  # the destination is unreachable: the run says so, with its log row, as every run does
            return
        try:
            loader.store.migrate()
            for extractor in streams:
                if extractor.cursor_field:
                    target = StreamTarget(self.pipeline.name, extractor.name,
                                          extractor.table_name(self.pipeline.name), extractor)
                    self._stream_state(loader, extractor, target)  # the tracker refuses a bad `since`
        finally:
            if self._loader is None:
                loader.close()

    def run(self) -> RunResult:
        streams = [self.pipeline.stream(n) for n in self.stream_names] or list(self.pipeline.streams)
        progress = self.progress or default_progress()
        try:
            with self._frame(self.trigger) as (loader, run):
                if run.skipped:
                    return run.result()
                self.log.info("run started", run_id=run.run_id, streams=[s.name for s in streams])
                for extractor in streams:
                    _check_stop()
                    figures = run.streams.setdefault(extractor.name, StreamFigures())
                    if extractor.sample_data:  # issue 15: never let stand-in data pass for the real source
                        figures.sample = extractor.sample_data
                        self.log.warning("stream reads sample data, not its real source", stream=extractor.name,
                                         sample=extractor.sample_data)
                    progress.start_stream(extractor.name)
                    try:
                        self._run_stream(loader, run, extractor, figures, progress)
                    except Exception as exc:
                        message = run.fail(extractor.name, exc)
                        self.log.error("stream failed; batches committed before the failure stay loaded",
                                       stream=extractor.name, error=message)
                    figures.faults = extractor.fault_report() or None  # source faults (REST retries) kept with the run
                    progress.end_stream(extractor.name, extracted=figures.extracted, loaded=figures.loaded,
                                        rejected=figures.rejected)
                    self._check_ratio(run, extractor, figures)
                self._transform(run, loader, [s.name for s in streams])
            result = run.result()
        finally:
            progress.close()
        summary = result.summary
        log = self.log.info if result.status == "success" else self.log.warning
        log("run finished", run_id=result.run_id, status=result.status, extracted=summary.rows_extracted,
            loaded=summary.rows_loaded, rejected=summary.rows_rejected, error=summary.error_message)
        return result

    def _transform(self, run: _Run, loader: Loader, streams: list[str]) -> None:
        """Build the models downstream of what this run loaded (or the pipeline's own selection)."""
        from elt.pipeline import registered
        from elt.transforms import Builder, project_graph
        from elt.transforms.models import registered_transforms
        from elt.transforms.project import stream_tables

        wanted = self.pipeline.transforms
        project_dir = self.project_dir or Path.cwd()
        if not wanted or not ((project_dir / "sql").is_dir() or registered_transforms()):
            return
        try:
            graph = project_graph(project_dir, registered().values() or [self.pipeline])
            if wanted is True:
                failed = [s for s in streams if s in run.failures]
                ok = [s for s in streams if s not in run.failures]
                selected = graph.reading(stream_tables(self.pipeline, ok))
                blocked = selected & graph.reading(stream_tables(self.pipeline, failed))
                if blocked:
                    self.log.warning("models reading a failed stream are not built this run", models=sorted(blocked))
                selected -= blocked
            else:
                selected = graph.select(list(wanted))
            if not selected:
                return
            warehouse = loader.warehouse()
            self.log.info("building models", count=len(selected))
            run.transforms = Builder(warehouse, graph, full_refresh=self.full_refresh).run(selected)
        except Exception as exc:  # a broken graph (cycle, missing model) fails the run, with the loads kept
            run.fail("transforms", exc)

    def _check_ratio(self, run: _Run, extractor: Extractor, figures: StreamFigures) -> None:
        if not figures.rejected or not figures.extracted:
            return
        ratio = figures.rejected / figures.extracted
        if ratio > extractor.max_bad_ratio:
            run.over_ratio.append(
                f"stream {extractor.name!r} rejected {figures.rejected} of {figures.extracted} records"
                f" ({ratio:.1%}), more than its max_bad_ratio of {extractor.max_bad_ratio:.1%}:"
                " see `elt dead-letter list`"
            )

    def _stream_state(self, loader: Loader, extractor: Extractor, target: StreamTarget
                      ) -> tuple[StreamState, WatermarkTracker, dict[str, Any]]:
        """The stream's stored state, and the watermark tracker that decides how it moves in this read."""
        watermark, known_fields = loader.store.read_state(self.pipeline.name, extractor.name)
        # The cursor's kind: declared, else stored, else the raw table's column, else the first accepted value.
        kind = extractor.cursor_declared_kind or (watermark.kind if watermark else None)
        if kind is None and extractor.cursor_field:
            kind = loader.writer.table_cursor_kind(target.table, extractor.cursor_field)
        tracker = WatermarkTracker(
            extractor.name, extractor.cursor_field, watermark, kind, lookback=extractor.lookback,
            sorted=extractor.sorted_by_cursor,
            per_batch=(extractor.sorted_by_cursor and extractor.complete_per_batch
                       and extractor.strategy.watermark_per_batch),
        )
        target.cursor_kind = tracker.kind
        state = StreamState(self.pipeline.name, extractor.name, watermark=watermark, full_refresh=self.full_refresh,
                            values=loader.store.read_values(self.pipeline.name, extractor.name),
                            since=tracker.since(self.full_refresh, self.since))
        return state, tracker, known_fields

    def _run_stream(
        self, loader: Loader, run: _Run, extractor: Extractor, figures: StreamFigures, progress: Progress
    ) -> None:
        log = self.log.bind(stream=extractor.name)
        strategy = extractor.strategy
        writer = loader.writer
        target = StreamTarget(self.pipeline.name, extractor.name, extractor.table_name(self.pipeline.name), extractor)
        state, tracker, known_fields = self._stream_state(loader, extractor, target)
        log.info("stream started", table=f"raw.{target.table}", strategy=strategy.name,
                 since=str(state.since) if state.since is not None else None)
        # A stream-atomic strategy (replace, delete_reload) applies the read only when it
        # completes: the extractor's state and after-commit hooks (a file manifest, moving a
        # processed file) wait for that too, or they would claim rows that were never applied.
        atomic = strategy.unit == "stream"
        deferred_state: dict[str, Any] = {}
        after_commit: list[Any] = []
        seen_fields: set[str] = set()
        writer.begin_stream(target, run.run_id)

        def validated() -> Iterator[tuple[Batch, PreparedBatch, int]]:
            kind = target.cursor_kind
            for batch in extractor.extract(state):
                prepared = prepare(extractor, batch.records, kind, writer)
                # What the extractor itself could not read describes a problem, not a record.
                prepared.rejected += [Rejected(record, reason, kind="problem") for record, reason in batch.rejected]
                kind = prepared.cursor_kind
                count = len(batch.records) + len(batch.rejected)
                # The prepared rows are all that is loaded: dropping the dicts halves the
                # memory of the batches waiting in the prefetch queue.
                batch.records, batch.rejected = [], []
                yield batch, prepared, count

        applied = False
        accepted = 0
        try:
            # Reading and validating the next batch overlaps with loading this one.
            for number, (batch, prepared, count) in enumerate(
                    prefetch(validated(), depth=self.prefetch_depth, should_stop=_check_stop), start=1):
                tracker.learn(prepared.cursor_kind)
                target.cursor_kind = tracker.kind
                target.watermark = tracker.committed
                high = prepared.high_water
                if batch.high_water is not None and tracker.kind:
                    high = coerce_cursor(batch.high_water, tracker.kind)
                unsorted: UnsortedStream | None = None
                try:
                    tracker.check_sort(prepared.low_water, prepared.drop, number)
                    mark = tracker.advance(high, batch.incomplete)
                except UnsortedStream as exc:
                    unsorted, mark = exc, None  # this batch's rows still load; the watermark stays
                changes, known_fields = diff_fields(known_fields, prepared.fields)
                seen_fields.update(prepared.fields)
                if atomic:
                    deferred_state.update(batch.state)
                    if batch.after_commit is not None:
                        after_commit.append(batch.after_commit)
                figures.extracted += count  # read, whether or not its load succeeds
                result = writer.load_batch(target, run.run_id, prepared, mark, changes, known_fields,
                                           state=None if atomic else batch.state,
                                           supersedes=None if atomic else batch.supersedes)
                if not atomic and batch.after_commit is not None:
                    batch.after_commit()
                for change in changes:
                    if change.change != "initial":
                        log.warning("schema change: records keep the field in _raw_payload; update the stg model if"
                                    " needed", field=change.field, change=change.change, old_type=change.old_type,
                                    new_type=change.new_type)
                for rejected in prepared.rejected[:3]:
                    log.warning("record rejected to dead_letter", reason=rejected.reason)
                for reason in batch.incomplete:
                    log.warning("the read may have skipped records", reason=reason)
                figures.add(result)
                figures.rejected += result.rejected
                figures.watermark = tracker.committed
                accepted += len(prepared.rows)
                progress.advance(extractor.name, figures.extracted, figures.loaded, figures.rejected)
                loader.store.update_run(run.run_id, run.summary())
                if unsorted is not None:
                    raise unsorted
                _check_stop()  # a requested stop happens here, with this batch committed

            empty = strategy.empty_read_problem(extractor) if accepted == 0 and not figures.rejected else None
            if figures.rejected and not strategy.applies_with_rejects and (accepted == 0 or not extractor.max_bad_ratio):
                # The swap would drop the rejected records' rows that are there now: only a stream that
                # accepts partial loads (max_bad_ratio > 0) swaps them out, and never for a read of rejects only.
                tracker.incomplete.append(
                    f"{figures.rejected} record(s) were rejected (see `elt dead-letter list`); swapping in the read"
                    " would drop their rows that are stored now. Fix the contract or transform_record, or the source,"
                    " and run again")
            complete = not tracker.incomplete and empty is None
            final = tracker.final(complete)
            writer.finish_stream(target, run.run_id, final, complete, deferred_state)
            applied = True
            if atomic and not complete:
                figures.not_applied()  # the shadow was dropped, not swapped in
        finally:
            if not applied and atomic:
                figures.not_applied()
                # A failed or stopped read of a stream-atomic strategy is not applied: drop its shadow.
                try:
                    writer.finish_stream(target, run.run_id, None, False)
                except Exception as exc:  # the original error matters more; a killed run's shadow is rebuilt anyway
                    log.warning("could not drop the shadow of the unfinished read", error=str(exc))
        if empty is not None:
            raise EltError(empty)
        if complete:
            for hook in after_commit:
                hook()
            if extractor.cursor_field and accepted and tracker.committed is None and state.since is None:
                # Not a loss (the whole source was read), but every run will read it all again.
                log.warning("no record carried the cursor field, so the watermark cannot move and every run reads"
                            " the whole source; check its name (nested fields are not looked into)",
                            cursor=extractor.cursor_field)
            # Only a read of the whole source can tell that a field is gone (an incremental slice
            # may simply hold no record carrying a sparse field).
            gone = removed_fields(known_fields, seen_fields) if accepted and state.since is None else []
            if gone:
                known_fields = {k: v for k, v in known_fields.items() if k not in {c.field for c in gone}}
                loader.store.record_schema_changes(self.pipeline.name, extractor.name, target.table, run.run_id,
                                                   gone, known_fields)
                for change in gone:
                    log.warning("schema change: no record of this read carried the field", field=change.field,
                                change="removed")
        else:
            reasons = [f"the read may have skipped records: {reason}; the watermark stays where the read was proven"
                       f" complete{strategy.kept_when_incomplete}" for reason in tracker.incomplete]
            run.incomplete[extractor.name] = reasons
            figures.incomplete = list(tracker.incomplete)
        if tracker.held:
            # Everything read was loaded, but the watermark could not follow: partial, so it is seen.
            run.incomplete.setdefault(extractor.name, []).extend(tracker.held)
            figures.incomplete = [*(figures.incomplete or []), *tracker.held]
            for reason in tracker.held:
                log.warning("watermark held", reason=reason)
        figures.watermark = tracker.committed

    # --- deletes (`elt reconcile`) ----------------------------------------------------------

    def reconcile(self) -> RunResult:
        """Compare each ``detect_deletes`` stream's source keys with the stored ones; mark the vanished."""
        chosen = [self.pipeline.stream(n) for n in self.stream_names] or list(self.pipeline.streams)
        streams = [s for s in chosen if getattr(s, "detect_deletes", False)]
        if not streams:
            raise ConfigError(f"pipeline {self.pipeline.name!r} has no stream with detect_deletes = True to reconcile")
        with self._frame("reconcile") as (loader, run):
            if run.skipped:
                return run.result()
            for extractor in streams:
                figures = run.streams.setdefault(extractor.name, StreamFigures())
                target = StreamTarget(self.pipeline.name, extractor.name, extractor.table_name(self.pipeline.name), extractor)
                try:
                    self._stream_state(loader, extractor, target)  # the cursor kind the table stores
                    figures.deleted, figures.restored = loader.writer.mark_deleted(target, extractor.listed_keys())
                    self.log.info("keys reconciled", stream=extractor.name, marked_deleted=figures.deleted,
                                  restored=figures.restored, table=f"raw.{target.table}")
                except Exception as exc:
                    run.fail(extractor.name, exc)
        return run.result()

    # --- transforms alone (`elt transform`) ----------------------------------------------

    def transform(self, selectors: Sequence[str] = (), layers: Sequence[str] = (), threads: int = 4) -> RunResult:
        """Build the selected models (all by default), logged as a run of ``transforms``."""
        from elt.pipeline import registered
        from elt.transforms import Builder, project_graph

        project_dir = self.project_dir or Path.cwd()
        graph = project_graph(project_dir, registered().values() or [self.pipeline])
        selected = graph.select(selectors, layers)
        with self._frame("transform", name=TRANSFORM_RUN) as (loader, run):
            if run.skipped:
                return run.result()
            run.transforms = Builder(loader.warehouse(), graph, threads=threads, full_refresh=self.full_refresh).run(selected)
        return run.result()

    # --- dead-letter replay ----------------------------------------------------------

    def replay(self, ids: Sequence[int] = (), resolved_by: str = "elt dead-letter replay") -> RunResult:
        """Re-validate unresolved dead letters with today's code and load those that pass, by each strategy's replay rule."""
        progress = self.progress or LogProgress()
        with self._frame("replay") as (loader, run):
            if run.skipped:
                return run.result()
            by_stream: dict[str, list[DeadLetter]] = {}
            for letter in loader.store.unresolved_dead_letters(self.pipeline.name, self.stream_names, ids):
                by_stream.setdefault(letter.stream, []).append(letter)
            for name, letters in by_stream.items():
                figures = run.streams.setdefault(name, StreamFigures())
                try:
                    self._replay_stream(loader, run, self.pipeline.stream(name), letters, figures, resolved_by)
                except Exception as exc:
                    run.fail(name, exc)
                progress.end_stream(name, replayed=figures.loaded, still_rejected=figures.rejected)
        return run.result()

    def _replay_stream(
        self, loader: Loader, run: _Run, extractor: Extractor, letters: list[DeadLetter],
        figures: StreamFigures, resolved_by: str,
    ) -> None:
        strategy = extractor.strategy
        if strategy.replay_refusal:
            raise ConfigError(f"stream {extractor.name!r} {strategy.replay_refusal}")
        problems = [letter for letter in letters if letter.kind == "problem"]
        if problems:
            example = problems[0]
            run.incomplete[extractor.name] = [
                f"{len(problems)} dead letter(s) describe a problem in the source, not a record (e.g. id {example.id}:"
                f" {example.error[:120]}); they were not replayed. Fix the source or the stream's settings and read it"
                " again (a file: drop it again into the folder), then `elt dead-letter resolve` them"]
        target = StreamTarget(self.pipeline.name, extractor.name, extractor.table_name(self.pipeline.name), extractor)
        _, tracker, known_fields = self._stream_state(loader, extractor, target)
        # Newest letter first: of several letters of one key with nothing stored, the newest is
        # written and the older ones then meet a stored version they cannot prove older than.
        records = sorted((letter for letter in letters if letter.kind == "record"),
                         key=lambda letter: (letter.created_at, letter.id), reverse=True)
        reasons: Counter[str] = Counter()
        for start in range(0, len(records), 1000):
            chunk = records[start:start + 1000]
            prepared = prepare(extractor, [letter.record for letter in chunk], tracker.kind, loader.writer)
            tracker.learn(prepared.cursor_kind)
            target.cursor_kind = tracker.kind
            still_bad = {rejected.index for rejected in prepared.rejected}
            accepted = [letter for i, letter in enumerate(chunk) if i not in still_bad]
            resolved = {letter.id: str(row[-1]) for letter, row in zip(accepted, prepared.rows, strict=True)}
            # Records still bad stay in dead_letter as they are (no second copy).
            figures.rejected += len(still_bad)
            reasons.update(rejected.reason for rejected in prepared.rejected)
            prepared.rejected = []
            changes, known_fields = diff_fields(known_fields, prepared.fields)
            result = loader.writer.replay_batch(target, run.run_id, prepared, changes, known_fields,
                                                resolved, f"{resolved_by} (run {run.run_id})")
            figures.add(result)
            figures.extracted += len(chunk)
            superseded = sum(1 for h in resolved.values() if h not in result.written_hashes)
            if superseded:
                figures.superseded = (figures.superseded or 0) + superseded
        if reasons:
            why = "; ".join(f"{n} × {reason[:300]}" for reason, n in reasons.most_common(3))
            more = f" (and {len(reasons) - 3} other reason(s))" if len(reasons) > 3 else ""
            run.rejected_again.append(
                f"stream {extractor.name!r}: {reasons.total()} of {len(records)} replayed record(s) were rejected again"
                f" and stay unresolved in pipeline.dead_letter: {why}{more}. Fix the code or the contract and replay"
                " them again, or `elt dead-letter resolve` them")
