"""What Bitbucket ends up showing, through the function and the Bitbucket stand-in."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

import relay.errors
import relay.reporting
import relay.transport
import relay.warm
from standins.builds import COMMIT, build
from tests.conftest import TOKEN, deliver, log_lines, shown
from tests.test_fuzz import ALLOWED_PATH


def _keyed(b: dict, key: str) -> dict:
    b["substitutions"]["_BITBUCKET_KEY"] = key
    return b


def states(server) -> list[tuple[str, str]]:
    return [(s["state"], s["description"]) for _, s in server.app.history]


def test_a_normal_lifecycle_ends_successful_in_four_bitbucket_calls(bitbucket):
    for status in ("QUEUED", "WORKING", "SUCCESS"):
        deliver(build(status))
    assert states(bitbucket) == [
        ("INPROGRESS", "Queued"),
        ("INPROGRESS", "Running"),
        ("SUCCESSFUL", "Succeeded in 3m 12s"),
    ]
    assert len(bitbucket.app.status_calls()) == 4
    [status] = shown(bitbucket)
    assert status["refname"] == "feature/fish"
    assert status["url"] == build("SUCCESS")["logUrl"]


def test_a_late_working_message_never_sets_a_final_status_back(bitbucket, new_instance):
    deliver(build("SUCCESS"))
    new_instance()  # the late message reaches another instance
    deliver(build("WORKING"))
    deliver(build("QUEUED"))
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]
    assert states(bitbucket) == [("SUCCESSFUL", "Succeeded in 3m 12s")]


def test_a_late_queued_message_does_not_undo_running(bitbucket, new_instance):
    deliver(build("WORKING"))
    new_instance()
    deliver(build("QUEUED"))
    assert states(bitbucket) == [("INPROGRESS", "Running")]


def test_duplicates_on_a_warm_instance_cost_no_bitbucket_call(bitbucket):
    for status in ("QUEUED", "QUEUED", "WORKING", "WORKING", "SUCCESS", "SUCCESS", "WORKING"):
        deliver(build(status))
    assert len(bitbucket.app.status_calls()) == 4
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_a_rerun_of_the_same_trigger_replaces_the_old_builds_status(bitbucket):
    deliver(build("FAILURE", "run-1"))
    deliver(build("QUEUED", "run-2"))
    assert [(s["state"], s["description"]) for s in shown(bitbucket)] == [("INPROGRESS", "Queued")]
    deliver(build("SUCCESS", "run-2"))
    [status] = shown(bitbucket)
    assert status["state"] == "SUCCESSFUL"
    assert "run-2" in status["url"]


def test_a_stale_message_of_an_older_run_does_not_replace_a_newer_runs_status(bitbucket, new_instance):
    published_long_ago = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    deliver(build("SUCCESS", "run-2"))
    new_instance()
    deliver(build("WORKING", "run-1"), published=published_long_ago)
    [status] = shown(bitbucket)
    assert (status["state"], "run-2" in status["url"]) == ("SUCCESSFUL", True)


def test_mirror_split_is_found_by_trying_the_next_split_and_remembered(bitbucket, capsys):
    bitbucket.app.repositories = {"my_team/web_app"}
    deliver(build("QUEUED", source="mirror", repo="my_team/web_app"))
    assert [s["state"] for s in shown(bitbucket, "my_team/web_app")] == ["INPROGRESS"]
    [line] = log_lines(capsys.readouterr().out)
    assert line["repository"] == "my_team/web_app"  # the split Bitbucket knew, not the first one tried
    tried = len(bitbucket.app.status_calls())
    deliver(build("SUCCESS", source="mirror", repo="my_team/web_app"))
    assert [s["state"] for s in shown(bitbucket, "my_team/web_app")] == ["SUCCESSFUL"]
    assert len(bitbucket.app.status_calls()) == tried + 1


def test_a_mirror_whose_remembered_split_stops_answering_finds_its_other_split(bitbucket):
    """The split Bitbucket knew is tried first, not alone: a repository that moved (my_team/web_app became
    my/team_web_app) is found again."""
    bitbucket.app.repositories = {"my_team/web_app"}
    deliver(build("QUEUED", source="mirror", repo="my_team/web_app"))
    bitbucket.app.repositories = {"my/team_web_app"}
    deliver(build("SUCCESS", source="mirror", repo="my_team/web_app"))
    assert [s["state"] for s in shown(bitbucket, "my/team_web_app")] == ["SUCCESSFUL"]


def test_a_mirror_builds_message_never_replaces_a_status_written_after_it_was_published(bitbucket, new_instance):
    """The first split tried is the right one: the message's publish time still decides against a status of
    unknown age (Cloud Build's API does not know the build it names)."""
    bitbucket.app.repositories = {"my/team_web_app"}
    deliver(build("QUEUED", "b-2", source="mirror", repo="my_team/web_app"))
    new_instance()
    published = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    deliver(build("WORKING", "b-1", source="mirror", repo="my_team/web_app"), published)
    [status] = shown(bitbucket, "my/team_web_app")
    assert (status["description"], "b-2" in status["url"]) == ("Queued", True)


def test_a_repository_bitbucket_does_not_know_is_logged_with_bitbucket_words_and_acknowledged(bitbucket, capsys):
    """A WARNING: the repository a build names is its author's to mend (make doctor tells a token's reach apart)."""
    bitbucket.app.repositories = {"acme/other"}
    deliver(build("SUCCESS"))
    [line] = log_lines(capsys.readouterr().out)
    assert (line["severity"], "@type" in line) == ("WARNING", False)
    assert "Repository acme/webapp not found" in line["message"]
    assert line["repository"] == "acme/webapp"
    assert line["commit"] == COMMIT


def test_a_status_created_by_someone_else_is_reported_as_forbidden(bitbucket, capsys, monkeypatch, new_instance):
    bitbucket.app.accept_token("someone-elses-token-l57_b6PiMz0Ct43ERWEnJKAp")
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": "someone-elses-token-l57_b6PiMz0Ct43ERWEnJKAp"}))
    deliver(build("SUCCESS"))
    new_instance()
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": TOKEN}))
    deliver(build("FAILURE", "b-2"))
    errors = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "ERROR"]
    assert len(errors) == 1
    assert "403" in errors[0]["message"]
    assert "Only the creator" in errors[0]["message"]
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_a_key_the_build_chose_that_another_accounts_status_holds_is_a_warning(
    bitbucket, capsys, monkeypatch, new_instance
):
    """`_BITBUCKET_KEY` naming another tool's status (its account's, so Bitbucket answers 403) is the build's to mend:
    otherwise any build could page whoever runs the relay. Under the trigger's own key a 403 stays an ERROR (above)."""
    another_tool = "JiSTXZP__esjHh5H4z3IcuMzcNLoIXEd"
    bitbucket.app.accept_token(another_tool)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": another_tool}))
    deliver(_keyed(build("SUCCESS"), "jenkins-webapp"))
    new_instance()
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": TOKEN}))
    capsys.readouterr()
    deliver(_keyed(build("FAILURE", "b-2"), "jenkins-webapp"))
    lines = log_lines(capsys.readouterr().out)
    [refused] = [line for line in lines if line["message"].startswith("Bitbucket refused the status")]
    assert "403" in refused["message"]
    assert [line["severity"] for line in lines if line["severity"] == "ERROR" or "@type" in line] == []
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_a_bad_request_answer_is_logged_as_a_warning_and_acknowledged(bitbucket, capsys):
    """Bitbucket refusing a value of the build's (its log URL, its branch) is the build's to mend: no page."""
    bitbucket.app.fail_next("400")
    deliver(build("SUCCESS"))  # does not raise: retrying cannot mend a 400
    [line] = log_lines(capsys.readouterr().out)
    assert (line["severity"], "@type" in line) == ("WARNING", False)
    assert "400" in line["message"]
    assert "Bad request" in line["message"]


@pytest.mark.parametrize("fault", ["500", "502", "503", "drop"])
def test_transient_failures_are_retried_inside_the_call(bitbucket, fault):
    bitbucket.app.fail_next(fault, fault)
    deliver(build("SUCCESS"))
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_a_slow_answer_times_out_and_is_retried(bitbucket, monkeypatch):
    monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", "0.3")
    bitbucket.app.fault_delay = 1.0
    bitbucket.app.fail_next("timeout")
    deliver(build("SUCCESS"))
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_an_outage_raises_so_pubsub_redelivers_and_the_redelivery_lands(bitbucket, capsys):
    bitbucket.app.fail_next(*["503"] * (relay.transport.HTTP_RETRIES + 1))
    with pytest.raises(relay.errors.TransientError, match="503"):
        deliver(build("SUCCESS"))
    assert shown(bitbucket) == []
    deliver(build("SUCCESS"))  # the redelivery
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]
    warnings = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    assert "Will retry" in warnings[0]["message"]


def test_events_older_than_the_configured_age_are_acknowledged_without_a_call(bitbucket, capsys, monkeypatch):
    monkeypatch.setenv("MAX_EVENT_AGE_SECONDS", "3600")
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    deliver(build("SUCCESS"), published=two_hours_ago)
    assert bitbucket.app.calls == []
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING"
    assert "older than MAX_EVENT_AGE_SECONDS" in line["message"]


def test_an_old_build_published_now_is_still_reported(bitbucket):
    b = build("SUCCESS")
    b["createTime"], b["startTime"], b["finishTime"] = (
        "2020-01-01T00:00:00Z",
        "2020-01-01T00:00:01Z",
        "2020-01-01T00:01:01Z",
    )
    deliver(b)
    assert [s["description"] for s in shown(bitbucket)] == ["Succeeded in 1m"]


def test_every_log_line_is_structured_with_the_build_and_its_target(bitbucket, capsys):
    deliver(build("SUCCESS"))
    [line] = log_lines(capsys.readouterr().out)
    assert line == {
        "severity": "INFO",
        "message": "Posted SUCCESSFUL (Succeeded in 3m 12s); its Code Insights report written",
        "report": "written",
        "build_id": "b-0001",
        "trigger": "webapp-pr",
        "build_status": "SUCCESS",
        "repository": "acme/webapp",
        "commit": COMMIT,
        "state": "SUCCESSFUL",
        "key": "2bceb582-3141-44bf-b444-5640cbcaecc5",
        "refname": "feature/fish",
        "credential": 1,  # the position of the entry of the credentials document that signed it
    }


def test_a_skipped_build_leaves_one_info_line_and_sends_nothing(bitbucket, capsys):
    b = build("SUCCESS", source="none")
    b["source"] = {"gitSource": {"url": "https://github.com/acme/webapp"}}
    deliver(b)
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "INFO"
    assert line["message"].startswith("Skipped: the build's git source")
    assert bitbucket.app.calls == []


# --- the instance's memory of statuses: bounded, least recently used first ---------


def test_the_memory_of_statuses_forgets_the_least_recently_used_first(bitbucket, monkeypatch):
    monkeypatch.setattr(relay.reporting.Memory, "SIZE", 4)
    commits = [f"{n:040x}" for n in range(5)]
    for commit in commits[:4]:
        deliver(build("WORKING", commit=commit))  # read + post: each is remembered
    calls = len(bitbucket.app.status_calls())
    deliver(build("WORKING", commit=commits[0]))  # a duplicate: recalled, and so used most recently
    assert len(bitbucket.app.status_calls()) == calls
    deliver(build("WORKING", commit=commits[4]))  # a fifth status: the least recently used one goes
    calls = len(bitbucket.app.status_calls())
    deliver(build("WORKING", commit=commits[0]))
    assert len(bitbucket.app.status_calls()) == calls  # still remembered
    deliver(build("WORKING", commit=commits[1]))
    assert [c.method for c in bitbucket.app.status_calls()[calls:]] == ["GET"]  # forgotten: read again


# --- one event never outlives its deadline -------------------------------------------


def test_retries_stop_at_the_events_deadline_and_the_event_is_redelivered(bitbucket, monkeypatch):
    monkeypatch.setenv("EVENT_DEADLINE_SECONDS", "1")
    monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", "0.4")
    bitbucket.app.fault_delay = 30
    bitbucket.app.fail_next(*["timeout"] * (relay.transport.HTTP_RETRIES + 1))
    started = time.monotonic()
    with pytest.raises(relay.errors.TransientError):
        deliver(build("WORKING"))
    assert time.monotonic() - started < 1 + 0.4 + 1  # the deadline, one attempt's timeout, and slack
    assert 1 <= len(bitbucket.app.calls) < relay.transport.HTTP_RETRIES + 1


@pytest.mark.parametrize(
    ("deadline", "timeout", "retry_after"),
    [("2", "10", 60), ("3", "1", 2)],  # 2 s fit in 3, but the attempt after them may take 2 x 1 s more
    ids=["longer than the deadline", "fits the deadline but not with the next attempt"],
)
def test_a_retry_after_that_cannot_end_before_the_deadline_is_not_waited_for(
    bitbucket, monkeypatch, deadline, timeout, retry_after
):
    monkeypatch.setenv("EVENT_DEADLINE_SECONDS", deadline)
    monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", timeout)
    bitbucket.app.retry_after = retry_after
    bitbucket.app.fail_next("429")
    started = time.monotonic()
    with pytest.raises(relay.errors.TransientError, match="429"):
        deliver(build("SUCCESS"))
    assert time.monotonic() - started < 2
    assert len(bitbucket.app.calls) == 1
    deliver(build("SUCCESS"))  # the redelivery
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_a_retry_after_within_the_deadline_is_honoured(bitbucket, monkeypatch):
    monkeypatch.setenv("EVENT_DEADLINE_SECONDS", "10")
    monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", "2")  # an attempt takes at most 2 + 2 s: 1 + 4 s fit in 10
    bitbucket.app.retry_after = 1
    bitbucket.app.fail_next("429")
    started = time.monotonic()
    deliver(build("SUCCESS"))
    assert time.monotonic() - started >= 1
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_an_in_progress_status_in_another_tools_words_is_taken_over_by_any_state_of_ours(bitbucket):
    """Bitbucket shows this build's status in words that are none of ours (as the original function or
    a hand-made status might): even Awaiting approval, our earliest phase, replaces it."""
    b = build("PENDING")
    theirs = {"key": b["buildTriggerId"], "state": "INPROGRESS", "url": b["logUrl"], "description": "Build started"}
    response = requests.post(
        f"{bitbucket.api_url}/repositories/acme/webapp/commit/{COMMIT}/statuses/build",
        json={**theirs, "refname": "feature/fish"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 201
    deliver(b)
    assert [(s["state"], s["description"]) for s in shown(bitbucket)] == [("INPROGRESS", "Awaiting approval")]


def test_an_attempt_with_a_timeout_longer_than_the_deadline_still_ends_at_the_deadline(bitbucket, monkeypatch):
    monkeypatch.setenv("EVENT_DEADLINE_SECONDS", "1")
    monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", "10")
    bitbucket.app.fault_delay = 30
    bitbucket.app.fail_next("timeout")
    started = time.monotonic()
    with pytest.raises(relay.errors.TransientError):
        deliver(build("SUCCESS"))
    assert time.monotonic() - started < 3  # the deadline and slack, not the 10 s timeout


# --- a key never changes a path -------------------------------------------------------------------------


@pytest.mark.parametrize("key", [".", ".."])
def test_a_key_of_dots_reads_and_writes_the_builds_own_status_under_its_hash(bitbucket, key):
    """`_BITBUCKET_KEY=..` would read `…/commit/{sha}/statuses/` (the list) and `.` `…/statuses/build/`."""
    deliver(_keyed(build("WORKING"), key))
    deliver(_keyed(build("SUCCESS"), key))
    hashed = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
    assert [(s["key"], s["state"]) for s in shown(bitbucket)] == [(hashed, "SUCCESSFUL")]
    for call in bitbucket.app.calls:
        assert ALLOWED_PATH.fullmatch(call.raw_uri), call.raw_uri
    reads = [call.raw_uri for call in bitbucket.app.status_calls() if call.method == "GET"]
    assert reads
    assert all(uri.endswith(f"/statuses/build/{hashed}") for uri in reads)


# --- a repository's visibility has a lifetime ------------------------------------------------------------

FAILED_STEP = [{"id": "unit-tests", "name": "python:3.12", "status": "FAILURE", "exitCode": 1}]
FAILED_LINE = "E       AssertionError: assert 'ADA' == 'Ada'"


def test_a_repository_made_public_shows_no_more_log_lines_once_its_visibility_is_read_again(bitbucket, google):
    """Read once per repository per instance, and again after 10 minutes (not only when the instance restarts): the
    lines of a repository made public stop leaving Google Cloud within that lifetime."""
    now = [5000.0]
    relay.warm.warm_instance().reporter.clock = lambda: now[0]

    def fail(build_id: str, commit: str) -> str:
        google.app.write_log("acme-ci", build_id, {'Step #0 - "unit-tests"': [FAILED_LINE]})
        deliver(build("FAILURE", build_id, commit=commit, steps=FAILED_STEP))
        [report] = bitbucket.app.shown_reports("acme", "webapp", commit)
        return report["details"]

    assert FAILED_LINE in fail("b-1", "1" * 40)
    bitbucket.app.public.add("acme/webapp")
    now[0] += 599
    assert FAILED_LINE in fail("b-2", "2" * 40)  # still within the lifetime of what was read
    now[0] += 1  # ten minutes to the second: read again
    assert FAILED_LINE not in fail("b-3", "3" * 40)
    assert "the repository is not known to be private" in fail("b-4", "4" * 40)
