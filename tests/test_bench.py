"""`make bench` in its quick mode, so the benchmark cannot rot. Timings are printed, never asserted here."""

from __future__ import annotations

import subprocess
import sys

from standins.processes import ROOT


def test_the_quick_benchmark_prints_every_row_and_the_counts_hold():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1]
        for line in result.stdout.splitlines()
        if line.startswith("| ")
    }
    assert table["Google client modules loaded by `import main`"] == "0"
    assert table["Bitbucket calls, normal lifecycle (QUEUED, WORKING, SUCCESS)"] == "4"
    assert table["Bitbucket calls, duplicated lifecycle (each message twice)"] == "4"
    assert table["new connections for 300 warm events (after the first)"] == "0"
    assert table["credential fetches, bucket (storage read + KMS decrypt)"] == "2 first event, 0 next 100"
    assert table["credential fetches, Secret Manager (access)"] == "1 first event, 0 next 100"
    assert table["credential fetches, OAuth consumer in Secret Manager (access + token)"] == "2 first event, 0 next 100"
    for row in ("import main (functions_framework already loaded)", "warm final-state event, TLS on loopback"):
        assert row in table
