"""`elt serve`: one long-running process that runs pipelines on their schedules and watches their health.

- Each scheduled pipeline is an APScheduler 3 job (cron with a time zone, or
  ``every``) with ``max_instances=1``, coalesced catch-up and a generous
  misfire grace. Pipelines with ``after=[...]`` start when all of those have
  finished successfully (or ``partial``) in the same cycle; a failed upstream
  skips them, with the reason in the log and in ``pipeline.execution_log``.
- Every run is a child process (``elt run NAME``), stopped when its
  ``timeout`` passes: SIGTERM (it stops after the batch in flight), then
  SIGKILL; its log row ends ``failed`` with "timed out after N s". A hung
  source call cannot freeze the scheduler. The child takes the pipeline's
  database lock, so a cron-started ``elt run`` cannot overlap it either.
- The health checks run every ``check_every`` and feed the alerts.
- SIGTERM/SIGINT: no new runs; running children get SIGTERM and a bounded
  wait; then the process exits.
"""

from __future__ import annotations

import datetime as dt
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from elt.alerts import Alerts, configured, notify
from elt.errors import ConfigError
from elt.health import run_checks
from elt.loaders.base import RunSummary
from elt.logs import get_logger
from elt.pipeline import Pipeline
from elt.schedules import Schedule

#: Exit codes of `elt run` that count as "finished" for pipelines that run after it.
_FINISHED = {0: "success", 3: "partial"}


class Scheduler:
    """Runs a project's pipelines on schedule, each in a child process."""

    def __init__(self, project_dir: Path, pipelines: dict[str, Pipeline], *, alerts: Alerts | None = None,
                 stop_grace: float = 30.0, loader_factory: Any = None) -> None:
        self.project_dir = project_dir
        self.pipelines = pipelines
        self.alerts = alerts or configured()
        self.stop_grace = stop_grace
        self.log = get_logger()
        self._loader_factory = loader_factory or (
            lambda: next(iter(pipelines.values())).destination.loader(project_dir))  # type: ignore[union-attr]
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._stopping = threading.Event()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._running: dict[str, threading.Lock] = {name: threading.Lock() for name in pipelines}
        # For each pipeline with `after`: how its upstreams finished in the current cycle.
        self._cycle: dict[str, dict[str, str]] = {name: {} for name, p in pipelines.items() if p.after}
        self._guard = threading.Lock()
        # Timed-out runs being stopped: between the child closing its row as "interrupted" and this
        # process writing the real cause, a health check would alert with the wrong reason, so
        # checks wait for none to be in that window.
        self._timeouts = 0
        self._timeouts_done = threading.Condition(self._guard)
        self.started_at = dt.datetime.now(dt.UTC)
        self._validate()

    def _validate(self) -> None:
        for pipeline in self.pipelines.values():
            unknown = [u for u in pipeline.after if u not in self.pipelines]
            if unknown:
                raise ConfigError(f"pipeline {pipeline.name!r}: after={unknown} names no pipeline of this project")
            if pipeline.after and Schedule.of(pipeline):
                raise ConfigError(f"pipeline {pipeline.name!r}: give a schedule or after=[...], not both")

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self.started_at = dt.datetime.now(dt.UTC)
        for pipeline in self.pipelines.values():
            schedule = Schedule.of(pipeline)
            if schedule is None:
                continue
            self._scheduler.add_job(self.run_pipeline, schedule.trigger, args=[pipeline.name], id=pipeline.name,
                                    name=pipeline.name, max_instances=1, coalesce=True, misfire_grace_time=3600)
        for pipeline in self.pipelines.values():
            reconcile = Schedule.reconcile_of(pipeline)
            if reconcile is not None:
                # Reads every source key: its own job, and the pipeline's database lock keeps it off the loads.
                self._scheduler.add_job(self._child_run, reconcile.trigger, args=[pipeline.name, "reconcile"],
                                        id=f"{pipeline.name}-reconcile", max_instances=1, coalesce=True,
                                        misfire_grace_time=3600)
        self._scheduler.add_job(self.check, "interval", seconds=self.alerts.check_every.total_seconds(),
                                id="elt-check", max_instances=1, coalesce=True,
                                next_run_time=dt.datetime.now(dt.UTC))
        self._scheduler.start()
        self.log.info("scheduler started", pipelines=[j.id for j in self._scheduler.get_jobs() if j.id != "elt-check"],
                      check_every=str(self.alerts.check_every))

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then stop within ``stop_grace`` seconds (plus the kill)."""
        done = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            self.log.info("stop requested: no new runs; waiting for running ones", signal=signum)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not done.wait(1.0):
            pass
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._scheduler.pause()
        with self._guard:
            children = dict(self._children)
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)  # the run stops after its batch in flight
        deadline = time.monotonic() + self.stop_grace
        for name, child in children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=10)
                self._close_rows(child.pid, f"killed: the scheduler stopped and {name} did not within {self.stop_grace:g} s")
        self._scheduler.shutdown(wait=True)
        self.log.info("scheduler stopped")

    # --- runs --------------------------------------------------------------------------

    def run_pipeline(self, name: str) -> str:
        """Run one pipeline now in a child process; returns its status. Starts its dependents when due."""
        if self._stopping.is_set():
            return "skipped"
        lock = self._running[name]
        if not lock.acquire(blocking=False):
            self.log.warning("previous run still going; this one is skipped", pipeline=name)
            return "skipped"
        try:
            status = self._child_run(name)
        finally:
            lock.release()
        self._after(name, status)
        return status

    def _child_run(self, name: str, command_name: str = "run") -> str:
        pipeline = self.pipelines[name]
        timeout = pipeline.timeout.total_seconds() if isinstance(pipeline.timeout, dt.timedelta) else float(pipeline.timeout)
        command = [sys.executable, "-m", "elt", "--project", str(self.project_dir), command_name, name]
        if command_name == "run":
            command += ["--trigger", "schedule"]
        started = dt.datetime.now(dt.UTC)
        self.log.info("run starting", pipeline=name, timeout_s=timeout)
        child = subprocess.Popen(command, cwd=self.project_dir, stdin=subprocess.DEVNULL)
        with self._guard:
            self._children[f"{name} {command_name}"] = child
            if self._stopping.is_set():
                child.send_signal(signal.SIGTERM)  # started just as the scheduler stopped: let it stop too
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.log.error("run timed out; stopping it", pipeline=name, timeout_s=timeout, pid=child.pid)
            with self._guard:
                self._timeouts += 1
            try:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=min(self.stop_grace, 30.0))
                except subprocess.TimeoutExpired:
                    child.kill()  # a hung source call ignores the polite request
                    child.wait(timeout=10)
                self._close_rows(child.pid, f"timed out after {timeout:g} s", since=started)
            finally:
                with self._guard:
                    self._timeouts -= 1
                    self._timeouts_done.notify_all()
            return "failed"
        finally:
            with self._guard:
                self._children.pop(f"{name} {command_name}", None)
        status = _FINISHED.get(code, "skipped" if code == 4 else "failed")
        self.log.info("run finished", pipeline=name, status=status, exit_code=code)
        return status

    def _after(self, name: str, status: str) -> None:
        """Start (or skip) the pipelines waiting on ``name`` once all their upstreams reported this cycle."""
        ready: list[str] = []
        skipped: list[tuple[str, str]] = []
        with self._guard:
            for dependent, results in self._cycle.items():
                upstreams = self.pipelines[dependent].after
                if name not in upstreams:
                    continue
                results[name] = status
                if any(s not in ("success", "partial") for s in results.values()):
                    failed = ", ".join(f"{u} ({s})" for u, s in results.items() if s not in ("success", "partial"))
                    skipped.append((dependent, f"skipped: upstream {failed} did not finish successfully"))
                    results.clear()
                elif all(u in results for u in upstreams):
                    ready.append(dependent)
                    results.clear()
        for dependent, reason in skipped:
            self.log.warning(reason, pipeline=dependent)
            self._log_skip(dependent, reason)
        for dependent in ready:
            if not self._stopping.is_set():
                # Its own thread: a long chain must not hold the upstream's worker.
                threading.Thread(target=self.run_pipeline, args=(dependent,), name=f"elt-{dependent}", daemon=True).start()

    # --- bookkeeping and health ------------------------------------------------------------

    def check(self) -> None:
        """Run the health checks and send what is new, due for a reminder, or resolved."""
        with self._guard:  # bounded: a stop takes at most stop_grace (30 s) plus 10 s
            self._timeouts_done.wait_for(lambda: self._timeouts == 0, timeout=60)
        try:
            loader = self._loader_factory()
            try:
                loader.store.migrate()
                problems = run_checks(loader.store, self.pipelines.values(), watching_since=self.started_at)
                from elt.webhooks.source import registered_webhooks  # silent webhook sources alert too
                from elt.webhooks.status import webhook_problems

                problems += webhook_problems(self.project_dir, registered_webhooks().values())
                sent = notify(loader.store, problems, self.alerts, stop=self._stopping)
            finally:
                loader.close()
            self.log.info("health checked", problems=len(problems), alerts_sent=len(sent))
        except Exception as exc:  # the scheduler outlives a database hiccup; the next check retries
            self.log.error("health check failed", error=f"{type(exc).__name__}: {exc}")

    def _close_rows(self, pid: int, message: str, since: dt.datetime | None = None) -> None:
        """Mark the log rows of a stopped child failed with ``message`` (it may have closed them itself)."""
        loader = self._loader_factory()
        try:
            loader.store.close_runs_of(pid, socket.gethostname(), since or dt.datetime.now(dt.UTC) - dt.timedelta(days=2),
                                       message)
        finally:
            loader.close()

    def _log_skip(self, name: str, reason: str) -> None:
        loader = self._loader_factory()
        try:
            loader.store.migrate()
            run_id = loader.store.start_run(name, "schedule")
            loader.store.finish_run(run_id, RunSummary(status="skipped", error_message=reason))
        finally:
            loader.close()


def schedule_rows(pipelines: dict[str, Pipeline], now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The table `elt schedule` prints: pipeline, frequency, next run, dependencies, timeout."""
    now = now or dt.datetime.now(dt.UTC)
    rows = []
    for pipeline in pipelines.values():
        schedule = Schedule.of(pipeline)
        nxt = schedule.next_after(now) if schedule else None
        rows.append({
            "pipeline": pipeline.name,
            "frequency": schedule.text if schedule else ("after " + ", ".join(pipeline.after) if pipeline.after else "manual"),
            "next_run": nxt.isoformat() if nxt else None,
            "after": list(pipeline.after),
            "timeout_s": int(pipeline.timeout.total_seconds()) if isinstance(pipeline.timeout, dt.timedelta) else None,
            "reconcile": Schedule.reconcile_of(pipeline).text if pipeline.reconcile else None,  # type: ignore[union-attr]
        })
    return rows

