"""Each credential's hourly budget goes to what matters: 429 answers and Bitbucket's near-limit warning,
through the function and the Bitbucket stand-in (which counts each credential's calls)."""

from __future__ import annotations

from typing import Any

import pytest

import relay.errors
import relay.reporting
from standins.builds import build
from tests.conftest import deliver, log_lines, shown

COMMIT = "c" * 40


def test_an_in_progress_state_refused_with_429_is_acknowledged_with_a_warning(bitbucket, capsys):
    bitbucket.app.fail_next("429")
    deliver(build("WORKING"))  # does not raise: a later state supersedes it
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING"
    assert line["message"].startswith("Did not post INPROGRESS (Running): Bitbucket answered 429")
    assert "a later state of the build supersedes it" in line["message"]


def test_a_final_state_refused_with_429_is_redelivered_and_lands(bitbucket):
    bitbucket.app.fail_next("429")
    with pytest.raises(relay.errors.RateLimited):
        deliver(build("SUCCESS"))
    deliver(build("SUCCESS"))  # the redelivery
    assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", build()["substitutions"]["COMMIT_SHA"])] == [
        "SUCCESSFUL"
    ]


def test_after_near_limit_only_final_states_are_posted_with_that_credential(three_entries, capsys):
    three_entries.app.budget, three_entries.app.near_limit_share = 1000, 0.001  # near the limit at once
    deliver(build("SUCCESS", "b-0", repo="acme/webapp", commit="0" * 40))
    calls = len(three_entries.app.calls)
    deliver(build("QUEUED", "b-1", repo="acme/webapp", commit=COMMIT))
    deliver(build("WORKING", "b-1", repo="acme/webapp", commit=COMMIT))
    assert len(three_entries.app.calls) == calls  # nothing sent
    deliver(build("SUCCESS", "b-1", repo="acme/webapp", commit=COMMIT))
    # the result: read first (this instance wrote nothing of b-1, so a newer build might be shown), then written
    assert [c.method for c in three_entries.app.calls[calls:]] == ["GET", "POST"]
    deliver(build("WORKING", "b-2", repo="acme/api", commit=COMMIT))  # another entry, its own budget
    assert [s["state"] for s in three_entries.app.shown("acme", "api", COMMIT)] == ["INPROGRESS"]
    lines = log_lines(capsys.readouterr().out)
    warnings = [line for line in lines if "nearly spent (X-RateLimit-Limit 1000)" in line["message"]]
    assert [w["credential"] for w in warnings] == [1, 2]  # the allowance, once per cooldown and entry
    skipped = [line for line in lines if line.get("build_id") == "b-1" and line["state"] == "INPROGRESS"]
    assert [line["message"] for line in skipped] == [
        f"Did not post INPROGRESS ({what}): {relay.reporting.BUDGET_SPENT}" for what in ("Queued", "Running")
    ]


def test_the_cooldown_ends(three_entries, monkeypatch):
    monkeypatch.setenv("RATE_LIMIT_COOLDOWN_SECONDS", "0")
    three_entries.app.budget, three_entries.app.near_limit_share = 1000, 0.001
    deliver(build("SUCCESS", "b-0", repo="acme/webapp", commit="0" * 40))
    deliver(build("WORKING", "b-1", repo="acme/webapp", commit=COMMIT))
    assert [s["state"] for s in three_entries.app.shown("acme", "webapp", COMMIT)] == ["INPROGRESS"]


def test_a_429_without_retry_after_is_not_retried_inside_the_call_so_the_budget_is_not_spent_on_it(bitbucket):
    bitbucket.app.fail_next("429")
    with pytest.raises(relay.errors.RateLimited):
        deliver(build("SUCCESS"))
    assert len(bitbucket.app.calls) == 1
    deliver(build("SUCCESS"))  # the redelivery
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_annotations_give_way_when_bitbucket_answers_the_report_near_its_limit(bitbucket, google, capsys, monkeypatch):
    """The report is written; its annotations, which matter less than the next build's status, are not."""
    writes = bitbucket.app._report

    def near_the_limit_from_this_answer_on(method: str, *args: Any) -> Any:
        if method == "PUT":
            bitbucket.app.near_limit_share = 0.0
        return writes(method, *args)

    monkeypatch.setattr(bitbucket.app, "_report", near_the_limit_from_this_answer_on)
    step = 'Step #0 - "typecheck"'
    google.app.write_log("acme-ci", "b-1", {step: ["src/app.ts(2,7): error TS2322: Type 'string' is not assignable."]})
    steps = [{"id": "typecheck", "name": "node:22", "args": ["npx", "tsc"], "status": "FAILURE"}]
    deliver(build("FAILURE", "b-1", steps=steps, commit=COMMIT))

    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert "src/app.ts(2,7)" in report["details"]  # the lines an annotation would have been made of
    assert bitbucket.app.annotation_calls() == []
    [line] = [line for line in log_lines(capsys.readouterr().out) if line.get("build_id") == "b-1"]
    assert line["message"].endswith("; its Code Insights report written")
