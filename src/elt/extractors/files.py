"""``FileExtractor``: a drop folder of CSV, TSV, JSON and NDJSON files (optionally gzipped), each loaded once.

::

    class Invoices(FileExtractor):
        name = "invoices"
        folder = "/srv/drop/invoices"
        pattern = "*.csv*"
        move_processed = True

Each file is loaded once: a manifest entry per file (path, size, SHA-256) is
kept in ``pipeline.state`` and committed with the file's rows. A file whose
content changes is loaded again as a new version. Every row's raw table row has
``_source_id`` (``path:line``) and ``_source_version`` (the first 12 hex digits
of the file's SHA-256) in columns of their own; ``_raw_payload`` is the row alone.

Bad files never stop good ones. A file that cannot be read (wrong encoding,
empty, duplicate header names, too many ragged rows, corrupt gzip, invalid
JSON) goes to ``pipeline.dead_letter`` with its name, the line and the reason,
and the run ends ``partial``; a few ragged rows (or bad NDJSON lines) are
rejected one by one while the good rows load.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import hashlib
import io
import json
import shutil
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from elt.errors import ConfigError
from elt.extractors.base import Batch, Extractor, WriteStrategy
from elt.extractors.paginators import dig
from elt.logs import get_logger
from elt.state import StreamState

FORMATS = ("csv", "tsv", "json", "ndjson")
_SUFFIX_FORMAT = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson"}
MANIFEST_PREFIX = "file:"


class FileProblem(Exception):
    """The whole file cannot be loaded; ``line`` is where reading stopped (0: not line-specific)."""

    def __init__(self, reason: str, line: int = 0) -> None:
        super().__init__(reason)
        self.reason, self.line = reason, line


@dataclass
class _Row:
    line: int
    record: dict[str, Any] | None = None
    raw: Any = None
    reason: str | None = None


class FileExtractor(Extractor):
    """Records from every new or changed file in ``folder`` matching ``pattern``."""

    #: The drop folder (relative paths are taken from the current directory).
    folder: ClassVar[str | Path] = "."
    #: Glob of the files to read, relative to ``folder`` (``**/*.csv`` reaches into subfolders).
    pattern: ClassVar[str] = "*"
    #: csv, tsv, json or ndjson; ``None`` decides by extension (a ``.gz`` suffix is looked through).
    format: ClassVar[str | None] = None
    #: CSV delimiter; ``None`` detects it from the first lines (``,`` ``;`` tab ``|``).
    delimiter: ClassVar[str | None] = None
    #: Text encoding; ``None`` means UTF-8 (a UTF-8 or UTF-16 BOM is honoured). Set it for legacy files.
    encoding: ClassVar[str | None] = None
    #: For JSON files holding an object: dotted path of the record list.
    records_path: ClassVar[str] = ""
    #: Move each file to ``folder/processed/`` once its rows are committed.
    move_processed: ClassVar[bool] = False
    #: Share of ragged rows (wrong number of fields) above which the whole file is rejected.
    max_ragged_ratio: ClassVar[float] = 0.1
    #: Bad files make a run partial, not failed: the good files still load.
    max_bad_ratio: ClassVar[float] = 1.0
    write_strategy: ClassVar[str | WriteStrategy | None] = None
    #: Raw columns saying where each row came from; ``_raw_payload`` holds the row alone.
    source_fields: ClassVar[tuple[str, ...]] = ("_source_id", "_source_version")

    def _check(self) -> None:
        super()._check()
        if self.format is not None and self.format not in FORMATS:
            raise ConfigError(f"stream {self.name!r}: format {self.format!r} is not one of {', '.join(FORMATS)}")

    # --- discovery -----------------------------------------------------------------

    @property
    def root(self) -> Path:
        return Path(self.folder).expanduser()

    def files(self) -> list[Path]:
        """Files to consider, in name order (``processed/`` left out)."""
        root = self.root
        if not root.is_dir():
            raise ConfigError(f"stream {self.name!r}: folder {root} does not exist; create it or fix `folder`")
        return sorted(p for p in root.glob(self.pattern)
                      if p.is_file() and "processed" not in p.relative_to(root).parts[:-1])

    def extract(self, state: StreamState) -> Iterator[Batch]:
        log = get_logger(stream=self.name)
        manifest = {} if state.full_refresh else {
            k.removeprefix(MANIFEST_PREFIX): v for k, v in state.values.items() if k.startswith(MANIFEST_PREFIX)}
        size = max(1, int(self.batch_size))
        batch = Batch([])
        moves: list[Path] = []  # files whose manifest entry is in `batch`: moved once it commits

        def ready(current: Batch) -> Batch:
            if moves:
                current.after_commit = functools.partial(self._move_all, list(moves))
                moves.clear()
            return current

        skipped = 0
        for path in self.files():
            relative = path.relative_to(self.root).as_posix()
            digest = _sha256(path)
            known = manifest.get(relative)
            if known and known.get("sha256") == digest:
                skipped += 1
                if self.move_processed:
                    self._move(path)  # committed by an earlier run that stopped before moving it
                continue
            version = digest[:12]
            entry = {"sha256": digest, "size": path.stat().st_size, "rows": 0, "rejected": 0, "status": "loaded",
                     "version": (known or {}).get("version", 0) + 1}
            # Where this file's rows start in the pending batch (rows already yielded stay loaded).
            first_record, first_reject = len(batch.records), len(batch.rejected)
            try:
                for row in self.read(path):
                    if len(batch.records) + len(batch.rejected) >= size:
                        yield ready(batch)
                        batch = Batch([])
                        first_record = first_reject = 0
                    if row.record is not None:
                        row.record["_source_id"] = f"{relative}:{row.line}"
                        row.record["_source_version"] = version
                        batch.records.append(row.record)
                        entry["rows"] += 1
                    else:
                        batch.rejected.append(({"file": relative, "line": row.line, "row": row.raw}, str(row.reason)))
                        entry["rejected"] += 1
            except FileProblem as problem:
                # A file is loaded whole or not at all, as far as the pending batch goes.
                del batch.records[first_record:], batch.rejected[first_reject:]
                entry.update(status="rejected", reason=problem.reason, line=problem.line, rows=0, rejected=0)
                where = f" at line {problem.line}" if problem.line else ""
                batch.rejected.append(({"file": relative, "line": problem.line},
                                       f"file {relative} not loaded{where}: {problem.reason}"))
                log.warning("file rejected to dead_letter; the other files still load", file=relative,
                            line=problem.line, reason=problem.reason)
            # The manifest entry commits with the file's last rows: a crash before it means a re-read,
            # and re-read rows are the same records (same _source_id), which the write strategy skips.
            batch.state[MANIFEST_PREFIX + relative] = entry
            if self.move_processed:
                moves.append(path)
        if batch.records or batch.rejected or batch.state:
            yield ready(batch)
        if skipped:
            log.info("files already loaded were skipped", count=skipped)

    def _move_all(self, paths: list[Path]) -> None:
        for path in paths:
            self._move(path)

    def _move(self, path: Path) -> None:
        target = self.root / "processed" / path.relative_to(self.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while target.exists():  # a file of the same name processed before: keep both
            target = target.with_name(f"{path.stem}.{n}{path.suffix}")
            n += 1
        shutil.move(str(path), target)

    # --- reading -----------------------------------------------------------------------

    def format_of(self, path: Path) -> str:
        if self.format:
            return self.format
        suffixes = [s.lower() for s in path.suffixes]
        if suffixes and suffixes[-1] == ".gz":
            suffixes = suffixes[:-1]
        found = _SUFFIX_FORMAT.get(suffixes[-1] if suffixes else "")
        if found is None:
            raise FileProblem(f"cannot tell the format from the name {path.name!r}; set format on the stream")
        return found

    def read(self, path: Path) -> Iterator[_Row]:
        """Rows of one file; raises :class:`FileProblem` when the whole file is unusable."""
        kind = self.format_of(path)
        try:
            if kind in ("csv", "tsv"):
                yield from self._read_csv(path, kind)
            elif kind == "ndjson":
                yield from self._read_ndjson(path)
            else:
                yield from self._read_json(path)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise FileProblem(f"corrupt or truncated gzip ({exc})") from None
        except UnicodeDecodeError as exc:
            raise FileProblem(
                f"not valid {exc.encoding} ({exc.reason} at byte {exc.start} of a chunk); if the file uses another"
                " encoding, set encoding on the stream (e.g. encoding = 'cp1252')"
            ) from None

    def _binary(self, path: Path) -> Any:
        return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")  # type: ignore[return-value]

    def _text(self, path: Path) -> io.TextIOWrapper:
        raw = self._binary(path)
        encoding = self.encoding
        if encoding is None:
            start = raw.peek(4)[:4] if hasattr(raw, "peek") else b""
            if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                encoding = "utf-16"
            else:
                encoding = "utf-8-sig"  # reads plain UTF-8 too, and drops a BOM
        return io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")

    def _read_csv(self, path: Path, kind: str) -> Iterator[_Row]:
        delimiter = self.delimiter or ("\t" if kind == "tsv" else None)
        with self._text(path) as text:
            sample = text.read(64 * 1024)
        if not sample.strip():
            raise FileProblem("the file is empty", 1)
        if delimiter is None:
            try:
                delimiter = csv.Sniffer().sniff(sample.split("\n", 20)[0] if sample.count("\n") < 2 else sample,
                                                delimiters=",;\t|").delimiter
            except csv.Error:
                delimiter = ","
        last_line = [""]  # the file's last physical line, seen by the first pass

        def rows(remember: bool = False) -> Iterator[tuple[int, list[str]]]:
            with self._text(path) as text:
                reader = csv.reader(_remembering(text, last_line) if remember else text, delimiter=delimiter)
                line = 1
                try:
                    for row in reader:
                        yield line, row
                        line = reader.line_num + 1
                except csv.Error as exc:
                    raise FileProblem(f"unreadable CSV: {exc}", line) from None

        # First pass: decide whether the file as a whole is loadable.
        header: list[str] | None = None
        total = ragged = 0
        last_row_line = 0
        for line, row in rows(remember=True):
            if header is None:
                header = row
                continue
            if not row:
                continue
            total += 1
            last_row_line = line
            ragged += len(row) != len(header)
        ends_with_newline = last_line[0].endswith(("\n", "\r"))
        if header is None or not any(h.strip() for h in header):
            raise FileProblem("the file has no header row", 1)
        names = [h.strip() for h in header]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FileProblem(f"duplicate header names: {', '.join(repr(d) for d in duplicates)}; rename them", 1)
        names = [n or f"column_{i + 1}" for i, n in enumerate(names)]
        if total and ragged / total > self.max_ragged_ratio:
            raise FileProblem(
                f"{ragged} of {total} rows do not have the header's {len(names)} fields"
                f" (more than max_ragged_ratio {self.max_ragged_ratio:.0%}); is the delimiter {delimiter!r} right?"
            )
        first = True
        for line, row in rows():
            if first:
                first = False
                continue
            if not row:
                continue
            if len(row) != len(names):
                reason = (f"truncated last line (no newline at the end, {len(row)} of {len(names)} fields)"
                          if line == last_row_line and not ends_with_newline
                          else f"ragged row: {len(row)} fields, the header has {len(names)}")
                yield _Row(line, raw=row, reason=reason)
                continue
            yield _Row(line, dict(zip(names, row, strict=True)))

    def _read_ndjson(self, path: Path) -> Iterator[_Row]:
        good = bad = 0
        with self._text(path) as text:
            for number, line in enumerate(text, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    bad += 1
                    yield _Row(number, raw=line[:500], reason=f"not valid JSON: {exc.msg} at column {exc.colno}")
                    continue
                if not isinstance(record, dict):
                    bad += 1
                    yield _Row(number, raw=record, reason=f"a JSON {type(record).__name__}, not an object")
                    continue
                good += 1
                yield _Row(number, record)
        if not good and not bad:
            raise FileProblem("the file is empty", 1)
        if not good:
            raise FileProblem(f"none of its {bad} lines is a JSON object")

    def _read_json(self, path: Path) -> Iterator[_Row]:
        with self._text(path) as text:
            content = text.read()
        if not content.strip():
            raise FileProblem("the file is empty", 1)
        try:
            body = json.loads(content)
        except json.JSONDecodeError as exc:
            raise FileProblem(f"not valid JSON: {exc.msg}", exc.lineno) from None
        try:
            records = dig(body, self.records_path)
        except KeyError as missing:
            raise FileProblem(f"no {missing.args[0]!r} on the way to records_path {self.records_path!r}") from None
        if isinstance(records, dict) and not self.records_path:
            records = [records]
        if not isinstance(records, list):
            raise FileProblem(f"expected a list of records, found {type(records).__name__}; set records_path")
        for index, record in enumerate(records, start=1):
            # JSON arrays have no useful line numbers: the position in the array stands in.
            if isinstance(record, dict):
                yield _Row(index, record)
            else:
                yield _Row(index, raw=record, reason=f"item {index} is a JSON {type(record).__name__}, not an object")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()



def _remembering(lines: Iterable[str], last: list[str]) -> Iterator[str]:
    """Pass ``lines`` through, keeping the latest in ``last[0]`` (whether the file ends with a newline)."""
    for line in lines:
        last[0] = line
        yield line
