"""``FileExtractor``: a drop folder of CSV, TSV, JSON and NDJSON files (optionally gzipped), each loaded once.

::

    class Invoices(FileExtractor):
        name = "invoices"
        folder = "/srv/drop/invoices"
        pattern = "*.csv*"
        move_processed = True

Each file is loaded once: a manifest entry per file (path, size, SHA-256) is
kept in ``pipeline.state`` and committed with the file's rows. A file whose
content changes is loaded again as a new version, which replaces the old one:
once the new version is complete, stored rows of the file's other versions
get ``_deleted_at`` (in the same transaction), so a line the new version no
longer has is marked deleted, not left looking current. Every row's raw table row has
``_source_id`` (``path:line``) and ``_source_version`` (the first 12 hex digits
of the file's SHA-256) in columns of their own; ``_raw_payload`` is the row alone.

Bad files never stop good ones. A file that cannot be read (wrong encoding,
empty, duplicate header names, too many ragged rows, corrupt gzip, invalid
JSON, a header or delimiter other than the stream's) goes to
``pipeline.dead_letter`` with its name, the line and the reason, and the run
ends ``partial``; a few ragged rows, truncated lines (or bad NDJSON lines) are
rejected one by one, each naming its file and line, while the good rows load.

A file's manifest entry always says what of it is loaded. A file longer than
a batch records its progress with each batch (``status: loading``, committed
through ``line`` N); a run stopped there continues after line N. A file that
fails after some of its batches committed is ``rejected`` with those rows
kept and counted (``rows``, ``line``); once fixed, it continues after line N.
With ``whole_files = True`` a file's rows commit in one transaction instead,
so a file that fails leaves nothing behind and a retry reads it from the top.

File lifecycle, with ``move_processed = True``: a loaded file moves to
``processed/``; a rejected one to ``rejected/`` with ``<name>.reason.txt``
beside it. A rejected file is not "already loaded": putting it back in the
folder (``elt files retry`` does) loads it. Without moves, a rejected file is
read again when the stream's reading settings change (encoding, delimiter,
format, records_path) or on ``elt files retry``.

CSV dialect: one per stream. The delimiter and the header are declared, or
taken from the first file loaded and then fixed (kept in ``pipeline.state``);
a later file whose header (read with that delimiter) differs is rejected with a
reason naming both. ``--full-refresh`` takes them from the first file anew;
``sniff_each_file = True`` detects each file's delimiter on its own (the header
is still the stream's).
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
from elt.records import loads_capped
from elt.state import StreamState

FORMATS = ("csv", "tsv", "json", "ndjson")
_SUFFIX_FORMAT = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson"}
MANIFEST_PREFIX = "file:"
#: State key of the CSV dialect a stream fixed from its first file.
DIALECT_KEY = "dialect:csv"


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
    #: CSV delimiter; ``None`` detects it from the first lines (``,`` ``;`` tab ``|``) of the first
    #: file, and the stream keeps it (and that file's header) for every later file.
    delimiter: ClassVar[str | None] = None
    #: Detect the delimiter of every file on its own (a folder that mixes ``,`` and ``;`` exports);
    #: the header must still be the stream's.
    sniff_each_file: ClassVar[bool] = False
    #: Text encoding; ``None`` means UTF-8 (a UTF-8 or UTF-16 BOM is honoured). Set it for legacy files.
    encoding: ClassVar[str | None] = None
    #: For JSON files holding an object: dotted path of the record list.
    records_path: ClassVar[str] = ""
    #: Move each file to ``folder/processed/`` once its rows are committed (a rejected one to ``rejected/``).
    move_processed: ClassVar[bool] = False
    #: Each file's rows commit in one transaction, so a file that fails part-way leaves none behind
    #: (instead of keeping the rows of its committed batches and continuing after them on retry).
    #: A batch then holds whole files and may exceed ``batch_size``: memory grows with the largest file.
    whole_files: ClassVar[bool] = False
    #: Read files the manifest has as rejected again (set by ``elt files retry``).
    retry_rejected: ClassVar[bool] = False
    #: Share of ragged rows (wrong number of fields) above which the whole file is rejected.
    max_ragged_ratio: ClassVar[float] = 0.1
    #: Bad files make a run partial, not failed: the good files still load.
    max_bad_ratio: ClassVar[float] = 1.0
    write_strategy: ClassVar[str | WriteStrategy | None] = None
    #: Raw columns saying where each row came from; ``_raw_payload`` holds the row alone.
    source_fields: ClassVar[tuple[str, ...]] = ("_source_id", "_source_version")
    #: The CSV dialect fixed for this read (from state, or the first file): delimiter, header, file.
    _dialect: dict[str, Any] | None = None

    def _check(self) -> None:
        super()._check()
        if self.format is not None and self.format not in FORMATS:
            raise ConfigError(f"stream {self.name!r}: format {self.format!r} is not one of {', '.join(FORMATS)}")

    # --- discovery -----------------------------------------------------------------

    @property
    def root(self) -> Path:
        return Path(self.folder).expanduser()

    def files(self) -> list[Path]:
        """Files to consider, in name order (``processed/`` and ``rejected/`` left out)."""
        root = self.root
        if not root.is_dir():
            raise ConfigError(f"stream {self.name!r}: folder {root} does not exist; create it or fix `folder`")
        return sorted(p for p in root.glob(self.pattern)
                      if p.is_file() and not {"processed", "rejected"} & set(p.relative_to(root).parts[:-1]))

    def reading_settings(self) -> dict[str, Any]:
        """The settings that decide how a file reads: a rejected file is read again when they change."""
        return {"format": self.format, "delimiter": self.delimiter, "encoding": self.encoding,
                "records_path": self.records_path, "max_ragged_ratio": self.max_ragged_ratio,
                "sniff_each_file": self.sniff_each_file}

    def _wanted(self, known: dict[str, Any] | None, digest: str) -> bool:
        """Whether a file with manifest entry ``known`` and content ``digest`` is to be read."""
        if not known or known.get("sha256") != digest:
            return True
        status = known.get("status", "loaded")
        if status == "loading":
            return True  # a run stopped inside it: continue after its committed line
        if status == "rejected":
            # Back in the drop folder of a moving stream means put back on purpose (`elt files retry`).
            return self.retry_rejected or self.move_processed or known.get("settings") != self.reading_settings()
        return False

    def extract(self, state: StreamState) -> Iterator[Batch]:
        log = get_logger(stream=self.name)
        manifest = {} if state.full_refresh else {
            k.removeprefix(MANIFEST_PREFIX): v for k, v in state.values.items() if k.startswith(MANIFEST_PREFIX)}
        self._dialect = None if state.full_refresh else state.values.get(DIALECT_KEY)
        size = max(1, int(self.batch_size))
        batch = Batch([])
        moves: list[tuple[Path, str | None]] = []  # files whose manifest entry is in `batch`: moved once it commits

        def ready(current: Batch) -> Batch:
            if moves:
                current.after_commit = functools.partial(self._move_all, list(moves))
                moves.clear()
            return current

        skipped = still_rejected = 0
        for path in self.files():
            relative = path.relative_to(self.root).as_posix()
            digest = _sha256(path)
            known = manifest.get(relative)
            if not self._wanted(known, digest):
                if known and known.get("status") == "rejected":
                    still_rejected += 1
                    continue
                skipped += 1
                if self.move_processed:
                    self._move(path)  # committed by an earlier run that stopped before moving it
                continue
            version = digest[:12]
            if self.whole_files and len(batch.records) + len(batch.rejected) >= size:
                yield ready(batch)  # files are not split: batches end between them
                batch = Batch([])
            resume: dict[str, Any] = (
                known if known and known.get("sha256") == digest and known.get("committed_line") else {})
            # Rows through `done` are committed already (an earlier run stopped or failed after them).
            done = int(resume.get("committed_line") or 0)
            entry = {"sha256": digest, "size": path.stat().st_size, "status": "loaded",
                     "rows": int(resume.get("rows", 0)) if done else 0,
                     "rejected": int(resume.get("rejected", 0)) if done else 0,
                     "committed_line": done,
                     "version": (known or {}).get("version", 0) + (0 if resume else 1),
                     "settings": self.reading_settings()}
            dialect_before = self._dialect
            # Where this file's rows start in the pending batch (rows already yielded stay loaded).
            first_record, first_reject = len(batch.records), len(batch.rejected)
            committed = dict(entry)  # what the destination holds of this file once the pending batch commits
            last_line = done
            try:
                for row in self.read(path):
                    if row.line <= done:
                        continue
                    if not self.whole_files and len(batch.records) + len(batch.rejected) >= size:
                        # The file goes on in the next batch: this one records how far it got.
                        committed = dict(entry, status="loading", committed_line=last_line)
                        batch.state[MANIFEST_PREFIX + relative] = committed
                        yield ready(batch)
                        batch = Batch([])
                        first_record = first_reject = 0
                    last_line = row.line
                    if row.record is not None:
                        row.record["_source_id"] = f"{relative}:{row.line}"
                        row.record["_source_version"] = version
                        batch.records.append(row.record)
                        entry["rows"] += 1
                    else:
                        batch.rejected.append(({"file": relative, "line": row.line, "row": row.raw},
                                               f"{relative} line {row.line}: {row.reason}"))
                        entry["rejected"] += 1
                entry["committed_line"] = last_line
            except FileProblem as problem:
                # The file's rows in the pending batch are dropped; those committed earlier stay and are counted.
                del batch.records[first_record:], batch.rejected[first_reject:]
                self._dialect = dialect_before
                entry = dict(committed, status="rejected", reason=problem.reason, line=problem.line)
                where = f" at line {problem.line}" if problem.line else ""
                kept = (f"; its rows through line {entry['committed_line']} ({entry['rows']}) are loaded and stay,"
                        " and a retry continues after them" if entry["committed_line"] else "")
                batch.rejected.append(({"file": relative, "line": problem.line},
                                       f"file {relative} not loaded{where}: {problem.reason}{kept}"))
                log.warning("file rejected to dead_letter; the other files still load", file=relative,
                            line=problem.line, reason=problem.reason, rows_kept=entry["rows"])
            # The manifest entry commits with the file's last rows: a crash before it means a re-read
            # from the last committed line, and re-read rows are the same records (same _source_id).
            batch.state[MANIFEST_PREFIX + relative] = entry
            if known is not None and entry["status"] == "loaded":
                # Complete at this version: the rows an earlier version had and this one lacks get
                # _deleted_at; earlier runs' dead letters about the file, or the lines read now, are resolved.
                batch.supersedes[relative] = (version, done)
            if self._dialect is not None and self._dialect != dialect_before:
                batch.state[DIALECT_KEY] = self._dialect
            if self.move_processed:
                moves.append((path, entry.get("reason") if entry["status"] == "rejected" else None))
        if batch.records or batch.rejected or batch.state:
            yield ready(batch)
        if skipped:
            log.info("files already loaded were skipped", count=skipped)
        if still_rejected:
            log.warning("files rejected before were not read again: fix the stream's settings, or run"
                        " `elt files retry`", count=still_rejected)

    def _move_all(self, paths: list[tuple[Path, str | None]]) -> None:
        for path, reason in paths:
            self._move(path, reason)

    def _move(self, path: Path, reason: str | None = None) -> None:
        """To ``processed/``, or with a ``reason`` to ``rejected/`` with ``<name>.reason.txt`` beside it."""
        if not path.exists():
            return
        folder = "rejected" if reason is not None else "processed"
        target = self.root / folder / path.relative_to(self.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while target.exists():  # a file of the same name processed before: keep both
            target = target.with_name(f"{path.stem}.{n}{path.suffix}")
            n += 1
        shutil.move(str(path), target)
        if reason is not None:
            target.with_name(target.name + ".reason.txt").write_text(
                f"{path.name}: {reason}\nFix the stream's settings (or the file), then run `elt files retry`.\n",
                encoding="utf-8")

    def rejected_files(self) -> list[Path]:
        """Files in ``rejected/`` (not their reasons), for `elt files retry`."""
        folder = self.root / "rejected"
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".reason.txt"))

    def prepare_retry(self) -> list[Path]:
        """For `elt files retry`: put the rejected files back, and read rejected files again."""
        moved = [self.put_back(path) for path in self.rejected_files()]
        # A setting like any other (Extractor(**settings) sets them the same way), for this instance only.
        setattr(self, "retry_rejected", True)  # noqa: B010
        return moved

    def put_back(self, path: Path) -> Path:
        """Move a rejected file back into the drop folder (its reason file is removed)."""
        target = self.root / path.relative_to(self.root / "rejected")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target)
        path.with_name(path.name + ".reason.txt").unlink(missing_ok=True)
        return target

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
            line, column, offset = self._locate_decode_error(path, exc)
            where = f"line {line}, byte {column} of the line (file offset {offset})" if line else "an unknown line"
            raise FileProblem(
                f"not valid {exc.encoding} ({exc.reason}) at {where}; if the file uses another"
                " encoding, set encoding on the stream (e.g. encoding = 'cp1252')", line
            ) from None

    def _locate_decode_error(self, path: Path, error: UnicodeDecodeError) -> tuple[int, int, int]:
        """Line, byte column (1-based) and file offset of the first undecodable byte; zeros if not found.

        The text reader only knows the byte within its chunk: the file is decoded again here,
        line by line, to say where a person should look.
        """
        encoding = self._encoding(path)
        decoder = codecs.getincrementaldecoder(encoding)("strict")
        offset = 0
        with self._binary(path) as raw:
            for number, line in enumerate(raw, start=1):
                try:
                    decoder.decode(line)
                except UnicodeDecodeError as exc:
                    return number, exc.start + 1, offset + exc.start
                offset += len(line)
        return 0, 0, 0

    def _binary(self, path: Path) -> Any:
        return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")  # type: ignore[return-value]

    def _encoding(self, path: Path) -> str:
        """The codec to read ``path`` with: declared, or UTF-8/UTF-16 by BOM; UTF-8 always drops a BOM."""
        if self.encoding is not None:
            name = codecs.lookup(self.encoding).name
            # utf-8 as declared still means: a BOM is not part of the first header name.
            return "utf-8-sig" if name == "utf-8" else self.encoding
        with self._binary(path) as raw:
            start = raw.read(4)
        if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        return "utf-8-sig"  # reads plain UTF-8 too, and drops a BOM

    def _text(self, path: Path) -> io.TextIOWrapper:
        encoding = self._encoding(path)
        return io.TextIOWrapper(self._binary(path), encoding=encoding, errors="strict", newline="")

    def _read_csv(self, path: Path, kind: str) -> Iterator[_Row]:
        declared = self.delimiter or ("\t" if kind == "tsv" else None)
        with self._text(path) as text:
            sample = text.read(64 * 1024)
        if not sample.strip():
            raise FileProblem("the file is empty", 1)
        sniffed = _sniff(sample)
        fixed = self._dialect if kind == "csv" and declared is None else None
        own = sniffed if self.sniff_each_file else None
        delimiter = declared or own or (fixed or {}).get("delimiter") or sniffed
        last_line = [""]  # the file's last physical line, seen by the first pass
        record_lines: list[str] = []  # the physical lines of the row being parsed (first pass)

        def rows(remember: bool = False) -> Iterator[tuple[int, list[str]]]:
            with self._text(path) as text:
                source: Iterable[str] = _remembering(text, last_line, record_lines) if remember else text
                reader = csv.reader(source, delimiter=delimiter)
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
        last_ragged = False
        last_text = ""
        for line, row in rows(remember=True):
            last_text = "".join(record_lines)
            record_lines.clear()
            if header is None:
                header = row
                continue
            if not row:
                continue
            total += 1
            last_row_line = line
            last_ragged = len(row) != len(header)
            ragged += last_ragged
        ends_with_newline = last_line[0].endswith(("\n", "\r"))
        # A quote opened and never closed swallows the rest of the file into one field: the file was cut.
        unterminated = bool(total) and _unterminated(last_text, delimiter)
        if total and last_ragged and (unterminated or not ends_with_newline):
            ragged -= 1  # a truncated last line is rejected as such, not counted against the delimiter
        if header is None or not any(h.strip() for h in header):
            raise FileProblem("the file has no header row", 1)
        names = [h.strip() for h in header]
        if fixed is not None and names != fixed.get("header"):
            how = ("read with its own delimiter" if own else
                   f"read with the stream's delimiter; this file's looks like {sniffed!r}" if sniffed != delimiter else
                   "read with the stream's delimiter")
            stream_delimiter = fixed.get("delimiter") or delimiter
            raise FileProblem(
                f"its header {delimiter.join(names)!r} (delimiter {delimiter!r}, {how}) differs from the stream's"
                f" {stream_delimiter.join(fixed['header'])!r} (delimiter {stream_delimiter!r}), fixed by its first file"
                f" {fixed.get('file')!r}; fix the file, or set delimiter (or sniff_each_file) on the stream, or run"
                " --full-refresh if the new layout is meant", 1)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FileProblem(f"duplicate header names: {', '.join(repr(d) for d in duplicates)}; rename them", 1)
        names = [n or f"column_{i + 1}" for i, n in enumerate(names)]
        if total and ragged / total > self.max_ragged_ratio:
            raise FileProblem(
                f"{ragged} of {total} rows do not have the header's {len(names)} fields"
                f" (more than max_ragged_ratio {self.max_ragged_ratio:.0%}); is the delimiter {delimiter!r} right?"
            )
        if kind == "csv" and declared is None and fixed is None:
            # The first file loaded fixes the stream's dialect (committed with its rows).
            self._dialect = {"delimiter": delimiter, "header": [h.strip() for h in header], "file": path.name}
        first = True
        for line, row in rows():
            if first:
                first = False
                continue
            if not row:
                continue
            if line == last_row_line and unterminated:
                yield _Row(line, raw=row, reason="truncated last line (a quoted field is never closed: the file was cut)")
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
                    try:
                        record = json.loads(line)
                    except RecursionError:  # deeper than the parser goes: only that record is lost
                        record = loads_capped(line)
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
            try:
                body = json.loads(content)
            except RecursionError:  # deeper than the parser goes: only the records too deep are lost
                body = loads_capped(content)
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



def _remembering(lines: Iterable[str], last: list[str], current: list[str]) -> Iterator[str]:
    """Pass ``lines`` through, keeping the latest in ``last[0]`` (whether the file ends with a newline)
    and collecting them in ``current`` (the caller clears it after each parsed row)."""
    for line in lines:
        last[0] = line
        current.append(line)
        yield line


def _sniff(sample: str) -> str:
    """The delimiter the first lines suggest (``,`` when they do not say)."""
    try:
        return csv.Sniffer().sniff(sample.split("\n", 20)[0] if sample.count("\n") < 2 else sample,
                                   delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _unterminated(text: str, delimiter: str) -> bool:
    """Whether the row ``text`` ends inside a quoted field (the strict parser runs out of data)."""
    try:
        list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False
