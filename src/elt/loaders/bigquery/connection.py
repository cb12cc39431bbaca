"""Settings of a BigQuery destination and the one connection every BigQuery query goes through.

Every query elt sends passes ``BigQueryConnection.query``, so the
``maximum_bytes_billed`` guard is set on all of them and the bytes each one
processed are summed for the run's log row. Credentials come from the client
library's own lookup (``GOOGLE_APPLICATION_CREDENTIALS`` or the environment's
default credentials) and are never logged or stored by elt; a key file the library refuses is
opened only to name what is wrong with it (see ``_key_file_problem``), never quoted.

``endpoint`` points the stock client at another address with anonymous
credentials: the tests' local emulator on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

from elt import secrets
from elt.errors import ConfigError, LoadError

#: The bookkeeping and data layers, each a dataset (``<prefix><layer>``).
LAYERS = ("raw", "stg", "mart", "rpt", "pipeline")

#: A query that would bill more than this fails without charge: 10 GiB unless the project says otherwise.
DEFAULT_MAXIMUM_BYTES_BILLED = 10 * 1024**3


@dataclass(frozen=True)
class BigQuerySettings:
    """Where a BigQuery destination writes. ``from_env`` reads the ``ELT_BIGQUERY_*`` variables."""

    project: str
    dataset_prefix: str = ""
    location: str | None = None
    maximum_bytes_billed: int | None = DEFAULT_MAXIMUM_BYTES_BILLED
    endpoint: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> BigQuerySettings:
        env = os.environ if env is None else env
        given = {k: v for k, v in overrides.items() if v is not None}
        project = given.pop("project", None) or env.get("ELT_BIGQUERY_PROJECT", "").strip()
        if not project:
            raise ConfigError(
                "the BigQuery destination needs a project: set ELT_BIGQUERY_PROJECT (or BigQuery(project=...))"
            )
        limit = env.get("ELT_BIGQUERY_MAXIMUM_BYTES_BILLED", "").strip()
        values: dict[str, Any] = {
            "dataset_prefix": env.get("ELT_BIGQUERY_DATASET_PREFIX", ""),
            "location": env.get("ELT_BIGQUERY_LOCATION") or None,
            "endpoint": env.get("ELT_BIGQUERY_ENDPOINT") or None,
        }
        if limit:
            try:
                values["maximum_bytes_billed"] = int(limit) if limit.lower() not in ("0", "none", "off") else None
            except ValueError:
                raise ConfigError(
                    f"ELT_BIGQUERY_MAXIMUM_BYTES_BILLED={limit!r} is not a number of bytes (or 'none' for no limit)"
                ) from None
        values.update(given)
        return cls(project=project, **values)

    def __post_init__(self) -> None:
        # Checked here, before any request: BigQuery's answer to a bad dataset id is a 400 inside a
        # traceback, raised only once the first dataset is created.
        longest = max(len(layer) for layer in LAYERS)
        if not re.fullmatch(r"[A-Za-z0-9_]*", self.dataset_prefix) or len(self.dataset_prefix) + longest > 1024:
            shown = (repr(self.dataset_prefix) if len(self.dataset_prefix) <= 60
                     else f"{self.dataset_prefix[:40]!r}... ({len(self.dataset_prefix)} characters)")
            raise ConfigError(
                f"ELT_BIGQUERY_DATASET_PREFIX (or BigQuery(dataset_prefix=...)) = {shown} cannot start"
                " a BigQuery dataset id: use letters, digits and underscores only (my_prefix_),"
                f" at most {1024 - longest} characters")

    def dataset(self, layer: str) -> str:
        """The dataset of a layer (``raw``, ``stg``, ``mart``, ``rpt``, ``pipeline``)."""
        return f"{self.dataset_prefix}{layer}"

    def table_id(self, layer: str, table: str) -> str:
        """``project.dataset.table`` as the client's table arguments want it."""
        return f"{self.project}.{self.dataset(layer)}.{table}"

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"BigQuery project {self.project}, datasets {self.dataset_prefix or ''}<layer>{where}"


@dataclass
class BigQueryConnection:
    """One client, the byte guard on every query, and the bytes processed so far."""

    settings: BigQuerySettings
    bytes_processed: int = 0
    _client: Any = field(default=None, repr=False)
    _datasets: set[str] = field(default_factory=set, repr=False)
    # Models build on several threads through one connection: the lazy client
    # and the byte count are guarded (the client itself is thread-safe).
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def client(self) -> Any:
        with self._lock:
            return self._make_client()

    def _make_client(self) -> Any:
        if self._client is None:
            try:
                from google.cloud import bigquery
            except ImportError:
                raise ConfigError(
                    "the BigQuery destination needs google-cloud-bigquery: pip install 'elt[bigquery]'"
                ) from None
            kwargs: dict[str, Any] = {"project": self.settings.project, "location": self.settings.location}
            if self.settings.endpoint:
                from google.api_core.client_options import ClientOptions
                from google.auth.credentials import AnonymousCredentials

                kwargs["credentials"] = AnonymousCredentials()
                kwargs["client_options"] = ClientOptions(api_endpoint=self.settings.endpoint)
            from google.auth.exceptions import DefaultCredentialsError

            try:
                self._client = bigquery.Client(**kwargs)
            except DefaultCredentialsError as exc:
                raise _credentials_error(exc) from None
        return self._client

    #: How long an API call keeps being retried when BigQuery cannot be reached (the client's
    #: own default is 600 s of silence per call); a query may still run as long as it needs.
    reach_seconds: ClassVar[float] = 60.0

    def _retry(self) -> Any:
        from google.cloud.bigquery.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.reach_seconds)

    def _job_retry(self) -> Any:
        # Re-running a failed job (rate limits, backend errors) also stops after reach_seconds:
        # its default, 600 s, would otherwise wrap the API retries above. A job that runs long
        # is not retried, so it is not cut short.
        from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY

        return DEFAULT_JOB_RETRY.with_timeout(self.reach_seconds)

    def _unreachable(self, exc: Exception) -> LoadError | None:
        """A LoadError naming where BigQuery was looked for, when ``exc`` says it could not be reached."""
        from google.api_core.exceptions import RetryError

        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, (RetryError, ConnectionError)) or "Connection refused" in text or "Max retries" in text:
            where = self.settings.endpoint or "bigquery.googleapis.com"
            first = secrets.redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            return LoadError(
                f"cannot reach BigQuery at {where} (project {self.settings.project}) within {self.reach_seconds:g} s:"
                f" {first[:300]}. Check the network, ELT_BIGQUERY_ENDPOINT if set, and the credentials")
        return None

    def ensure_dataset(self, layer: str) -> str:
        """Create the layer's dataset on first use (once per connection); return its name."""
        name = self.settings.dataset(layer)
        if name not in self._datasets:
            from google.cloud import bigquery

            dataset = bigquery.Dataset(f"{self.settings.project}.{name}")
            if self.settings.location:
                dataset.location = self.settings.location
            try:
                self.client.create_dataset(dataset, exists_ok=True, retry=self._retry())
            except Exception as exc:
                unreachable = self._unreachable(exc)
                if unreachable is not None:
                    raise unreachable from None
                raise
            self._datasets.add(name)
        return name

    def query(self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None, *,
              job_config: Any = None) -> list[dict[str, Any]]:
        """Run ``sql`` with named (``@name``) parameters under the byte guard; return its rows as dicts.

        The parameters' BigQuery types come from their Python types (str, int,
        float, bool, datetime, date, bytes, None as STRING, lists as ARRAY).
        """
        rows, _ = self._execute(sql, params, job_config)
        return rows

    def run(self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> tuple[list[dict[str, Any]], int]:
        """Run ``sql`` (a statement or a script) like :meth:`query`; return its rows and the rows its DML changed."""
        return self._execute(sql, params, None)

    def _execute(self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None,
                 job_config: Any) -> tuple[list[dict[str, Any]], int]:
        from google.cloud import bigquery

        config = job_config or bigquery.QueryJobConfig()
        if self.settings.maximum_bytes_billed is not None:
            config.maximum_bytes_billed = self.settings.maximum_bytes_billed
        if params:
            config.query_parameters = [_parameter(name, value) for name, value in dict(params).items()]  # type: ignore[arg-type]
        try:
            # job_retry=None here: the client would otherwise wrap the insert in a 600 s retry of its own;
            # the insert is retried by `retry`, and a failed job is re-run by result()'s job_retry.
            job = self.client.query(sql, job_config=config, retry=self._retry(), job_retry=None)
            rows = [dict(row.items()) for row in job.result(retry=self._retry(), job_retry=self._job_retry())]
        except Exception as exc:
            unreachable = self._unreachable(exc)
            if unreachable is not None:
                raise unreachable from None
            if _over_byte_limit(exc):
                raise LoadError(
                    f"BigQuery refused a query that would bill more than maximum_bytes_billed"
                    f" ({self.settings.maximum_bytes_billed:,} bytes); nothing was charged or written."
                    f" BigQuery said: {str(exc).splitlines()[0]}. If reading that much is expected, raise the limit"
                    " (BigQuery(maximum_bytes_billed=...) or ELT_BIGQUERY_MAXIMUM_BYTES_BILLED)"
                ) from exc
            raise
        with self._lock:
            self.bytes_processed += int(job.total_bytes_processed or 0)
        return rows, int(getattr(job, "num_dml_affected_rows", None) or 0)

    def load_ndjson(self, table_id: str, schema: Sequence[tuple[str, str]], data: bytes | IO[bytes]) -> int:
        """Load newline-delimited JSON into ``table_id`` (replacing its rows) with a load job; return rows loaded.

        Load jobs are free and are not streaming inserts: the rows are visible
        to queries as soon as the job is done, and a failed job writes nothing.
        """
        import io

        from google.cloud import bigquery

        config = bigquery.LoadJobConfig(
            schema=[bigquery.SchemaField(name, kind) for name, kind in schema],
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        )
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        job = self.client.load_table_from_file(source, table_id, job_config=config, rewind=True)
        job.result()
        return int(job.output_rows or 0)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _credentials_error(exc: Exception) -> ConfigError:
    """One line saying why google-auth found no usable credentials and how to give some.

    google-auth's own message can quote the key file's fields; ours is built from what we check
    here, so nothing of the key reaches the terminal or the logs."""
    path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
    if not path:
        return ConfigError(
            "BigQuery found no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service account"
            " key file, or run `gcloud auth application-default login`"
            " (or set ELT_BIGQUERY_ENDPOINT to use an emulator, which needs none)")
    return ConfigError(
        f"GOOGLE_APPLICATION_CREDENTIALS={path}: {_key_file_problem(path, exc)}; point it at a service account key"
        " file (JSON, from the Google Cloud console), or unset it to use `gcloud auth application-default login`")


def _key_file_problem(path: str, exc: Exception) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "is a directory, not a key file"
    except (OSError, UnicodeError) as err:
        return f"cannot be read ({type(err).__name__})"
    try:
        info = json.loads(text)
    except ValueError as err:
        return f"is not valid JSON (line {getattr(err, 'lineno', '?')})"
    if not isinstance(info, dict):
        return "is not a JSON object"
    kind = info.get("type")
    if not kind:
        return "has no 'type' field: not a credentials file"
    if kind == "service_account":
        missing = [f for f in ("client_email", "private_key", "token_uri") if not info.get(f)]
        if missing:
            return f"a service account key missing {', '.join(missing)}"
        return "a service account key whose private_key cannot be read (a truncated or edited file?)"
    # The name of google-auth's complaint only: its text may quote the file.
    return f"a {kind!s:.40} credentials file google-auth cannot use ({type(exc.__cause__ or exc).__name__})"


def _over_byte_limit(exc: Exception) -> bool:
    """Whether BigQuery refused a query for the maximum_bytes_billed guard (reason ``bytesBilledLimitExceeded``)."""
    reasons = {str(e.get("reason")) for e in getattr(exc, "errors", None) or [] if isinstance(e, dict)}
    return "bytesBilledLimitExceeded" in reasons or "exceeded limit for bytes billed" in str(exc).lower()


def _parameter(name: str, value: Any) -> Any:
    import datetime as dt
    import decimal

    from google.cloud import bigquery

    if isinstance(value, (list, tuple)):
        kind = _scalar_type(value[0]) if value else "STRING"
        return bigquery.ArrayQueryParameter(name, kind, list(value))
    if isinstance(value, (dt.datetime, dt.date, decimal.Decimal, bool, int, float, bytes, str)) or value is None:
        return bigquery.ScalarQueryParameter(name, _scalar_type(value), value)  # type: ignore[arg-type]
    raise TypeError(f"query parameter {name!r}: no BigQuery type for {type(value).__name__}")


def _scalar_type(value: Any) -> str:
    import datetime as dt
    import decimal

    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, decimal.Decimal):
        return "NUMERIC"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, bytes):
        return "BYTES"
    return "STRING"
