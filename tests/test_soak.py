"""A short fault soak inside `make test`; `make soak` runs the full one (tests/soak.py)."""

from __future__ import annotations

from tests import soak


def test_builds_end_in_their_true_state_through_faults_duplicates_and_swaps(capsys):
    figures = soak.run(builds=60, fault_rate=0.35, seed=3, deadline=240)
    # soak.run asserts every final state and that no status ever went back to in progress
    assert figures.duplicates >= 0.2 * (figures.messages - figures.duplicates)
    assert figures.failed_calls >= 0.3 * figures.bitbucket_calls
    assert figures.deliveries >= figures.messages
    assert figures.seconds < 240
    with capsys.disabled():
        print("\nshort soak: " + "; ".join(figures.lines()))
