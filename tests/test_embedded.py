"""The embedded default database: started on demand, stopped when the last elt process using it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HOLD = """
import sys, time
from pathlib import Path
from elt.embedded import embedded_url
embedded_url(Path(sys.argv[1]))
print("up", flush=True)
time.sleep(600)
"""

USE_ONCE = """
import sys
from pathlib import Path
import psycopg
from elt.embedded import embedded_url
url, _ = embedded_url(Path(sys.argv[1]))
with psycopg.connect(url) as conn:
    conn.execute("SELECT 1")
"""


@pytest.mark.slow
def test_a_killed_elt_process_does_not_keep_the_embedded_server_running_forever(tmp_path: Path, embedded_dir: Path):
    env = {**os.environ, "ELT_EMBEDDED_DIR": str(embedded_dir)}
    env.pop("ELT_DATABASE_URL", None)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        assert (embedded_dir / "postmaster.pid").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # it never takes itself off the server's list of users
        holder.wait(timeout=30)

    # The next process finds the server still up, uses it, and, being the last live user, stops it.
    subprocess.run([sys.executable, "-c", USE_ONCE, str(tmp_path)], env=env, check=True, timeout=120)
    deadline = time.monotonic() + 30
    while (embedded_dir / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (embedded_dir / "postmaster.pid").exists(), "the embedded server was left running"
