"""Short soaks inside `make test`; `make soak` runs the full ones (tests/soak.py)."""

from __future__ import annotations

import pytest

from tests import soak


def test_builds_end_in_their_true_state_through_faults_duplicates_and_swaps(capsys):
    figures = soak.run(builds=60, fault_rate=0.35, seed=3, deadline=240, data_center=True)
    assert figures.server_builds == 15
    # soak.run asserts every final state and that no status ever went back to in progress
    assert figures.duplicates >= 0.2 * (figures.messages - figures.duplicates)
    assert figures.failed_calls >= 0.3 * figures.bitbucket_calls
    assert figures.deliveries >= figures.messages
    with capsys.disabled():
        print("\nshort soak: " + "; ".join(figures.lines()))


def test_with_one_credential_over_budget_every_final_state_still_lands_and_in_progress_ones_give_way(capsys):
    figures = soak.run(builds=60, fault_rate=0.0, seed=5, deadline=240, repositories=4, budget=25, window=1.0)
    # soak.run asserts every final state and that no status ever went back to in progress
    assert figures.failed_calls > 0  # the budget was overrun: 429s happened
    assert figures.in_progress_dropped > 0  # and in-progress states gave way to final ones
    with capsys.disabled():
        print("\nshort budget soak: " + "; ".join(figures.lines()))


@pytest.mark.parametrize("data_center", [False, True], ids=["cloud", "data center"])
def test_after_an_outage_every_commit_ends_on_its_newest_builds_result(capsys, data_center):
    figures = soak.outage(commits=25, seed=13, deadline=240, data_center=data_center, longest=2.0)
    # soak.outage asserts each commit's newest final state, no newer-to-older and no final-to-in-progress move
    assert figures.on_newest == figures.commits
    assert figures.redeliveries > 0.1 * figures.messages  # the outage refused a good share of them
    with capsys.disabled():
        print("\nshort outage soak: " + "; ".join(figures.lines()))
