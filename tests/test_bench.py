"""`make bench` in its quick mode, so the benchmark cannot rot. The quick run fails when a target is missed
by more than its margin for noise (bench.QUICK_MARGIN); the exact counts are asserted here too."""

from __future__ import annotations

import subprocess
import sys

from standins.processes import ROOT


def test_the_quick_benchmark_meets_every_target_and_the_counts_hold():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line.strip("| ").split(" | ") for line in result.stdout.splitlines() if line.startswith("| ")]
    table = {r[0]: r[1:] for r in rows[1:]}  # rows[0] is the header
    assert all(r[-1] in ("yes", "-") for r in table.values())
    assert table["Google client modules loaded by `import main`"][0] == "0"
    assert table["Google client modules loaded by that first event"][0] == "0"
    assert table["Bitbucket calls, normal lifecycle (QUEUED, WORKING, SUCCESS)"][0] == "4 + 1 report, ends SUCCESSFUL"
    assert table["Bitbucket calls, normal lifecycle (QUEUED, WORKING, SUCCESS)"][1].startswith("3, ")
    assert table["Bitbucket calls, duplicated lifecycle (each message twice)"][0] == "4 + 1 report, ends SUCCESSFUL"
    assert (
        table["Bitbucket calls, reordered lifecycle (WORKING, SUCCESS, QUEUED)"][1]
        == "3, ends INPROGRESS (the original, no report)"
    )
    assert table["new connections for 300 warm events (after the first)"][0] == "0"
    assert table["credential fetches, bucket (storage read + KMS decrypt)"][0] == "2 first event, 0 next 100"
    assert table["credential fetches, Secret Manager (access)"][0] == "1 first event, 0 next 100"
    assert (
        table["credential fetches, OAuth consumer in Secret Manager (access + token)"][0] == "2 first event, 0 next 100"
    )
    cold = [what for what in table if what.startswith("cold first event")]
    assert len(cold) >= 3
