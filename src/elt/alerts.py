"""Alerts: tell someone about each problem once, remind while it lasts, say when it is resolved.

Configure sinks in the project's ``pipelines.py``::

    Alerts(
        Webhook(from_env("SLACK_WEBHOOK_URL")),                # Slack-compatible {"text": ...}
        Email("smtp.example.com", sender="elt@example.com", to=["ops@example.com"],
              username="elt", password=from_env("SMTP_PASSWORD")),
        remind_every="4h",
    )

Without configuration problems go to the log only. Which problems are open
lives in ``pipeline.alerts`` (the same database as the run log), so a restart
of `elt serve` neither repeats nor forgets them. A sink that fails is retried
a few times, logged, and tried again next cycle; it never stops the scheduler.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import threading
from collections.abc import Sequence
from email.message import EmailMessage

import httpx

from elt.errors import ConfigError
from elt.health import Problem
from elt.loaders.base import BookkeepingStore
from elt.logs import get_logger
from elt.pipeline import on_clear
from elt.schedules import parse_every
from elt.secrets import Secret, redact

_configured: list[Alerts] = []


class Sink:
    """Where alerts go. ``send`` raises on failure (the caller retries and logs)."""

    name = "sink"

    def send(self, subject: str, text: str) -> None:
        raise NotImplementedError


class LogSink(Sink):
    name = "log"

    def send(self, subject: str, text: str) -> None:
        get_logger().warning("ALERT " + subject, detail=text)


class Webhook(Sink):
    """POST ``{"text": ...}`` (Slack's incoming webhooks; Discord and Teams bridges accept it too)."""

    name = "webhook"

    def __init__(self, url: Secret | str, *, timeout: float = 10.0) -> None:
        self.url, self.timeout = url, timeout

    def send(self, subject: str, text: str) -> None:
        url = self.url.value if isinstance(self.url, Secret) else self.url
        response = httpx.post(url, json={"text": f"*{subject}*\n{text}"}, timeout=self.timeout)
        if response.status_code >= 300:
            raise RuntimeError(f"webhook answered HTTP {response.status_code}: {response.text[:200]}")


class Email(Sink):
    """Email over SMTP (STARTTLS by default when the server offers it)."""

    name = "email"

    def __init__(self, host: str, *, sender: str, to: Sequence[str], port: int = 587,
                 username: str | None = None, password: Secret | str | None = None,
                 starttls: bool = True, timeout: float = 20.0) -> None:
        if not to:
            raise ConfigError("Email alerts need at least one recipient in to=[...]")
        self.host, self.port, self.sender, self.to = host, port, sender, list(to)
        self.username, self.password, self.starttls, self.timeout = username, password, starttls, timeout

    def send(self, subject: str, text: str) -> None:
        message = EmailMessage()
        message["Subject"], message["From"], message["To"] = subject, self.sender, ", ".join(self.to)
        message.set_content(text)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            smtp.ehlo()
            if self.starttls and smtp.has_extn("starttls"):
                smtp.starttls()
                smtp.ehlo()
            if self.username and self.password is not None:
                password = self.password.value if isinstance(self.password, Secret) else self.password
                smtp.login(self.username, password)
            smtp.send_message(message)


class Alerts:
    """The project's alert settings; creating one registers it (like a Pipeline)."""

    def __init__(self, *sinks: Sink, remind_every: str = "4h", check_every: str = "5m",
                 retries: int = 3, retry_wait: float = 2.0, project: str | None = None, register: bool = True) -> None:
        self.sinks = list(sinks) or [LogSink()]
        self.remind_every = parse_every(remind_every) if remind_every != "0s" else dt.timedelta(0)
        self.check_every = parse_every(check_every)
        self.retries, self.retry_wait = max(1, retries), retry_wait
        self.project = project
        if register:
            _configured.append(self)


def configured() -> Alerts:
    """The project's alert settings (the last created), or log-only defaults."""
    return _configured[-1] if _configured else Alerts(register=False)


def clear_alerts() -> None:
    _configured.clear()


on_clear(clear_alerts)


def notify(store: BookkeepingStore, problems: Sequence[Problem], alerts: Alerts | None = None,
           now: dt.datetime | None = None, stop: threading.Event | None = None) -> list[tuple[str, str]]:
    """Send what is new, due for a reminder, or resolved; returns ``(kind, key)`` for each alert sent.

    ``stop`` (set when ``elt serve`` is asked to stop) ends the sending between
    two alerts and cuts a retry's wait short: a sink that is down would
    otherwise hold the shutdown for retries x problems. What was not sent
    stays open, and the next check sends it.
    """
    stop = stop or threading.Event()
    alerts = alerts or configured()
    now = now or dt.datetime.now(dt.UTC)
    project = f"[{alerts.project}] " if alerts.project else ""
    sent: list[tuple[str, str]] = []
    open_rows = store.open_alerts()
    current = {p.key: p for p in problems}
    for key, problem in current.items():
        if stop.is_set():
            return sent
        row = open_rows.get(key)
        if row is None:
            row = store.open_alert(key, problem.check, problem.subject, problem.detail)
        if row["last_sent"] is None:
            kind = "problem"
        elif alerts.remind_every and now - row["last_sent"] >= alerts.remind_every:
            kind = "reminder"
        else:
            continue
        open_for = "" if kind == "problem" else f" (open since {row['first_seen']:%Y-%m-%d %H:%M} UTC)"
        subject = f"{project}elt {problem.check.replace('_', ' ')}: {problem.subject}"
        if _deliver(alerts, ("REMINDER: " if kind == "reminder" else "") + subject, problem.detail + open_for, stop):
            store.alert_sent(row["id"], problem.detail)
            sent.append((kind, key))
    for key, row in open_rows.items():
        if key in current:
            continue
        if stop.is_set():
            return sent
        check, _, subject_name = key.partition(":")
        # Only a problem someone heard about needs a "resolved"; an undelivered one just closes.
        if row["last_sent"] is None or _deliver(
                alerts, f"{project}RESOLVED elt {check.replace('_', ' ')}: {subject_name}",
                f"resolved; it was: {row['detail']}", stop):
            store.resolve_alert(row["id"])
            if row["last_sent"] is not None:
                sent.append(("resolved", key))
    return sent


def _deliver(alerts: Alerts, subject: str, text: str, stop: threading.Event | None = None) -> bool:
    """Send to every sink; True when at least one real sink (or the log, if it is the only one) took it."""
    stop = stop or threading.Event()
    log = get_logger()
    delivered = False
    for sink in alerts.sinks:
        for attempt in range(1, alerts.retries + 1):
            try:
                sink.send(subject, text)
                delivered = True
                break
            except Exception as exc:  # a broken sink must never stop the scheduler
                log.warning("alert delivery failed", sink=sink.name, attempt=attempt, of=alerts.retries,
                            error=redact(f"{type(exc).__name__}: {exc}"))
                if attempt < alerts.retries and stop.wait(alerts.retry_wait * attempt):
                    break  # stopping: the next start sends it
    return delivered
