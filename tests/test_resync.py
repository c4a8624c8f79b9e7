"""Resync (`make resync`): Bitbucket healed from Cloud Build's own record, through the function's own path,
against the Bitbucket and Data Center stand-ins and the Cloud Build API stand-in (listing with paging and the
create_time filter)."""

from __future__ import annotations

import io
import itertools
import json
import os
import socket
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import relay.config
import relay.decoding
import relay.errors
import relay.translate
import relay.transport
import resync
import resync.deployment
import resync.listing
from standins.bitbucket import REPOSITORY, went_to_older
from standins.builds import COMMIT, build
from tests.conftest import DC_TOKEN, TOKEN, dc_build, deliver, remember_stored, shown

CREATED = {}  # build id → createTime, for went_to_older


def ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def made(status: str, build_id: str, minutes_ago: float, **kwargs) -> dict:
    """A build created `minutes_ago`, as Cloud Build's API and its messages show it."""
    b = build(status, build_id, createTime=ago(minutes_ago), **kwargs)
    CREATED[build_id] = b["createTime"]
    return b


def commit(n: int) -> str:
    return f"{n:040x}"


def run_resync(*args: str, since: str = "24h") -> tuple[int, str]:
    out = io.StringIO()
    code = resync.run(["--project", "acme-ci", "--since", since, *args], dict(os.environ), out)
    return code, out.getvalue()


def state(server, commit_sha: str = COMMIT) -> tuple[str, str]:
    [status] = shown(server, commit=commit_sha)
    return status["state"], status["url"].split("?")[0].rsplit("/", 1)[-1]


def writes(server, since: int = 0) -> list:
    return [c for c in server.app.calls[since:] if c.method != "GET"]


# --- stuck statuses healed, and a second run that costs one read per status ------------------------------


def test_commits_left_in_progress_end_in_their_builds_final_state_with_their_reports(bitbucket, google):
    for n, final in enumerate(("SUCCESS", "FAILURE", "CANCELLED")):
        deliver(made("WORKING", f"b-{n}", 60 - n, commit=commit(n)))  # the running state reached Bitbucket
        google.app.record(made(final, f"b-{n}", 60 - n, commit=commit(n)))  # the final message was lost
    deliver(made("WORKING", "b-3", 50, commit=commit(3)))  # stuck, and re-run since: the re-run's result is due
    google.app.record(made("FAILURE", "b-3", 50, commit=commit(3)), made("SUCCESS", "b-4", 40, commit=commit(3)))
    asked = google.app.counts["cloudbuild.builds.get"]

    code, out = run_resync()

    assert code == 0, out
    assert [state(bitbucket, commit(n)) for n in range(4)] == [
        ("SUCCESSFUL", "b-0"),
        ("FAILED", "b-1"),
        ("STOPPED", "b-2"),
        ("SUCCESSFUL", "b-4"),
    ]
    assert all(bitbucket.app.shown_reports("acme", "webapp", commit(n)) for n in range(4))
    assert google.app.counts["cloudbuild.builds.get"] == asked  # every listed build's age is known from the list
    assert "corrected: build b-0: acme/webapp@000000000000 (webapp-pr): INPROGRESS → SUCCESSFUL" in out
    assert "statuses corrected: 4 (INPROGRESS → SUCCESSFUL: 2; INPROGRESS → FAILED: 1; INPROGRESS → STOPPED: 1)" in out


def test_a_second_resync_corrects_nothing_and_costs_one_read_per_status(bitbucket, google):
    for n in range(4):
        deliver(made("WORKING", f"b-{n}", 50 - n, commit=commit(n)))
        google.app.record(made("SUCCESS", f"b-{n}", 50 - n, commit=commit(n)))
    google.app.record(made("FAILURE", "b-older", 55, commit=commit(0)))  # an earlier run of the first commit
    assert run_resync()[0] == 0
    before = len(bitbucket.app.calls)

    code, out = run_resync()

    assert code == 0, out
    calls = bitbucket.app.calls[before:]
    assert [c.method for c in calls] == ["GET"] * 4
    assert "statuses already right: 4" in out
    assert "statuses corrected: 0" in out
    assert "superseded by a newer build of the same status: 1" in out


def test_installing_on_a_project_that_already_builds_puts_the_past_weeks_results_on_their_commits(bitbucket, google):
    for n in range(3):
        google.app.record(made("SUCCESS", f"b-{n}", 60 * 24 * (n + 1), commit=commit(n)))  # 1, 2 and 3 days ago
    google.app.record(made("FAILURE", "b-old", 60 * 24 * 9, commit=commit(9)))  # nine days ago

    code, out = run_resync(since="7d")

    assert code == 0, out
    assert [state(bitbucket, commit(n)) for n in range(3)] == [("SUCCESSFUL", f"b-{n}") for n in range(3)]
    assert shown(bitbucket, commit=commit(9)) == []  # created before SINCE
    assert "nothing → SUCCESSFUL: 3" in out


# --- newer builds untouched; builds still running -------------------------------------------------------


def test_a_newer_builds_status_is_not_replaced_by_an_older_builds_result(bitbucket, google):
    region = "https://console.cloud.google.com/cloud-build/builds;region=europe-west1/b-new?project=1234"
    newer = made("SUCCESS", "b-new", 10, logUrl=region)  # in a location this resync does not list
    deliver(newer)
    google.app.record(newer, made("FAILURE", "b-old", 30))
    before = len(bitbucket.app.calls)

    code, out = run_resync()  # global only

    assert code == 0, out
    assert state(bitbucket) == ("SUCCESSFUL", "b-new")
    assert writes(bitbucket, before) == []
    assert "statuses already right: 1" in out


def test_a_build_still_running_is_left_to_its_live_events_and_its_older_runs_result_is_not_posted(bitbucket, google):
    google.app.record(made("FAILURE", "b-1", 30), made("WORKING", "b-2", 5))

    code, out = run_resync()

    assert code == 0, out
    assert shown(bitbucket) == []  # neither b-1's FAILURE (b-2 replaces it) nor b-2's INPROGRESS
    assert "running: build b-2: still running: its live events report it" in out
    deliver(made("SUCCESS", "b-2", 5))
    assert state(bitbucket) == ("SUCCESSFUL", "b-2")


# --- paging, and where nothing is sent ------------------------------------------------------------------


def test_builds_over_several_pages_are_all_resynced_and_none_from_before_since(bitbucket, google, monkeypatch):
    monkeypatch.setattr(resync.listing, "PAGE_SIZE", 2)
    google.app.record(*(made("SUCCESS", f"b-{n}", 100 - n, commit=commit(n)) for n in range(5)))
    google.app.record(made("SUCCESS", "b-before", 200, commit=commit(7)))
    listed = google.app.counts["cloudbuild.builds.list"]

    code, out = run_resync(since=ago(150))

    assert code == 0, out
    assert google.app.counts["cloudbuild.builds.list"] - listed == 3
    assert [state(bitbucket, commit(n)) for n in range(5)] == [("SUCCESSFUL", f"b-{n}") for n in range(5)]
    assert shown(bitbucket, commit=commit(7)) == []
    assert "5 builds" in out


@pytest.mark.parametrize("cycle", [("7",), ("a", "b")], ids=["repeated", "cycling"])
def test_a_listing_that_repeats_its_page_token_stops_at_once_naming_the_listing(bitbucket, google, capsys, cycle):
    google.app.token_cycle = cycle
    google.app.record(*(made("SUCCESS", f"b-{n}", 100 - n, commit=commit(n)) for n in range(3)))
    listed = google.app.counts["cloudbuild.builds.list"]

    code, out = run_resync()

    assert code == 2, out
    assert google.app.counts["cloudbuild.builds.list"] - listed == len(cycle) + 1
    assert "Cloud Build's listing of the builds of projects/acme-ci/locations/global gave a page token it had given " \
        "before" in capsys.readouterr().err  # fmt: skip
    assert bitbucket.app.calls == []


def test_a_listing_that_never_ends_stops_after_a_bounded_number_of_pages_naming_the_listing(
    bitbucket, google, capsys, monkeypatch
):
    """A listing that names a fresh page token on every page (never one it gave before) is stopped once it has given
    more pages than the most builds a run lists could fill."""
    monkeypatch.setattr(google.app, "fresh_tokens", 2000)  # 200,000 builds' worth of pages, then it would end
    google.app.record(*(made("SUCCESS", f"b-{n}", 100 - n, commit=commit(n)) for n in range(3)))
    listed = google.app.counts["cloudbuild.builds.list"]

    code, out = run_resync()

    assert code == 2, out
    assert google.app.counts["cloudbuild.builds.list"] - listed == 1000
    assert "Cloud Build's listing of the builds of projects/acme-ci/locations/global had not ended after 1,000 " \
        "pages (100,000 builds, the most a run lists of one location)" in capsys.readouterr().err  # fmt: skip
    assert bitbucket.app.calls == []


def test_statuses_of_two_branches_of_one_commit_are_grouped_as_one(bitbucket, google):
    """Bitbucket keeps one status per repository, commit and key; the branch is an attribute of it."""
    google.app.record(
        made("SUCCESS", "b-main", 30, branch="main"), made("FAILURE", "b-release", 20, branch="release/1")
    )

    code, out = run_resync()

    assert code == 0, out
    assert state(bitbucket) == ("FAILED", "b-release")
    assert "superseded by a newer build of the same status: 1" in out
    assert [c.method for c in bitbucket.app.status_calls()] == ["GET", "POST"]


def test_a_listed_builds_essentials_give_the_same_status_and_report_as_the_build():
    """What resync holds of each listed build (relay.decoding.essentials) is what the function's path reads of it."""
    long_script = ["bash", "-c", "set -e; " + "echo step; " * 2000]
    cases = [
        build(
            "FAILURE",
            steps=[
                {
                    "id": "unit",
                    "name": "python:3.12",
                    "args": long_script,
                    "status": "FAILURE",
                    "exitCode": 1,
                    "timing": {"startTime": "x"},
                    "pullTiming": {},
                }
            ],
            failureInfo={"type": "USER_BUILD_STEP", "detail": "x"},
            statusDetail="y",
            warnings=[{"text": "w", "priority": "WARNING"}],
            results={"images": [{"name": "i"}] * 50},
            timing={"BUILD": {}},
            artifacts={"images": ["x"] * 100},
        ),
        build("SUCCESS", source="mirror", approval={"state": "REJECTED", "result": {"comment": "no"}}),
        build("CANCELLED", source="connection", steps=[{"entrypoint": "bash", "args": ["-c", "x" * 500, 7]}]),
    ]
    config = relay.config.Config()
    for b in cases:
        essentials = relay.decoding.essentials(b)
        assert relay.translate.translate(essentials, config) == relay.translate.translate(b, config)
        assert len(json.dumps(essentials)) < 2500


def test_a_repository_no_entry_serves_is_skipped_with_the_reason(three_entries, google):
    google.app.record(
        made("SUCCESS", "b-served", 20, repo="acme/webapp"), made("SUCCESS", "b-other", 10, repo="acme/other")
    )

    code, out = run_resync()

    assert code == 0, out
    assert state(three_entries) == ("SUCCESSFUL", "b-served")
    assert shown(three_entries, "acme/other") == []
    assert "skipped: build b-other: Skipped: no entry of the credentials serves repository acme/other" in out


def test_a_dry_run_lists_what_would_change_and_writes_nothing(bitbucket, google):
    deliver(made("WORKING", "b-1", 20))
    google.app.record(made("FAILURE", "b-1", 20), made("SUCCESS", "b-2", 10, commit=commit(2)))
    before = len(bitbucket.app.calls)

    code, out = run_resync("--dry-run")

    assert code == 0, out
    assert writes(bitbucket, before) == []
    assert state(bitbucket) == ("INPROGRESS", "b-1")
    assert shown(bitbucket, commit=commit(2)) == []
    assert "would correct: build b-1: acme/webapp@65ca6a99a257 (webapp-pr): INPROGRESS → FAILED" in out
    assert "would correct: build b-2: " in out
    assert "nothing → SUCCESSFUL" in out
    assert "statuses would be corrected: 2" in out
    assert "(dry run: Bitbucket is read, nothing is written)" in out


FAILED_STEPS = [
    {"id": "checkout", "name": "gcr.io/cloud-builders/git", "status": "SUCCESS"},
    {"id": "unit-tests", "name": "python:3.12", "args": ["pytest"], "status": "FAILURE", "exitCode": 1},
]


def repository_reads(server) -> list:
    return [c for c in server.app.calls if c.method == "GET" and REPOSITORY.fullmatch(c.path)]


def test_a_dry_run_reads_no_failed_steps_log_and_no_repositorys_visibility(bitbucket, google):
    """What only goes into a report (the failed step's lines, and whether the repository is private, which decides
    if they may be shown) is not read by a dry run, which writes no report."""
    deliver(made("WORKING", "b-1", 20))
    google.app.record(made("FAILURE", "b-1", 20, steps=FAILED_STEPS))
    google.app.write_log("acme-ci", "b-1", {'Step #1 - "unit-tests"': ["E   assert 1 == 2"]})
    logs = google.app.counts["logging.entries.list"]

    code, out = run_resync("--dry-run")

    assert code == 0, out
    assert "would correct: build b-1: acme/webapp@65ca6a99a257 (webapp-pr): INPROGRESS → FAILED" in out
    assert google.app.counts["logging.entries.list"] == logs
    assert repository_reads(bitbucket) == []

    code, out = run_resync()  # the same build resynced for real: its report shows the lines, read once
    assert code == 0, out
    assert google.app.counts["logging.entries.list"] == logs + 1
    assert len(repository_reads(bitbucket)) == 1
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert "assert 1 == 2" in report["details"]


REPORTS = "acme-test-reports"
FAILED_JUNIT = (b'<testsuite name="tests.test_app"><testcase classname="tests.test_app" name="test_login">'
                b'<failure message="boom"/></testcase></testsuite>')  # fmt: skip


def test_a_dry_run_downloads_no_junit_file(bitbucket, google, storage, monkeypatch):
    """A build's JUnit files (up to 20 MB, seconds of processor time to parse) only end the description of a final
    state the dry run does not write: it downloads none; the same build resynced for real reads each file once."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage.host)
    monkeypatch.setenv("TEST_REPORT_BUCKETS", REPORTS)
    for n in range(3):
        storage.put(REPORTS, f"resync/b-1/junit-{n}.xml", FAILED_JUNIT)
    failed = made("FAILURE", "b-1", 20)
    failed["substitutions"]["_BITBUCKET_TEST_REPORTS"] = f"gs://{REPORTS}/resync/b-1/"
    deliver(made("WORKING", "b-1", 20))
    google.app.record(failed)
    downloads = storage.downloads

    code, out = run_resync("--dry-run")

    assert code == 0, out
    assert "would correct: build b-1: acme/webapp@65ca6a99a257 (webapp-pr): INPROGRESS → FAILED" in out
    assert storage.downloads == downloads

    code, out = run_resync()  # the same build resynced for real: its status ends with the files' counts
    assert code == 0, out
    assert storage.downloads == downloads + 3
    [status] = shown(bitbucket)
    assert status["description"].endswith(": 3 of 3 tests failed")


def test_a_corrected_status_keeps_the_test_counts_of_its_builds_artifacts(bitbucket, google, storage, monkeypatch):
    """A passing build's JUnit files listed in its artifact manifest (results.artifactManifest) count on the status
    resync corrects, as on the status its live event would have posted."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage.host)
    monkeypatch.setenv("TEST_REPORT_BUCKETS", "acme-resync-reports")
    junit = Path(__file__).resolve().parent / "data" / "junit" / "surefire-passing.xml"
    generation = storage.put("acme-resync-reports", "target/surefire-reports/TEST-LedgerTest.xml", junit.read_bytes())
    location = f"gs://acme-resync-reports/target/surefire-reports/TEST-LedgerTest.xml#{generation}"
    manifest = {"location": location, "file_hash": []}
    storage.put("acme-resync-reports", "artifacts-b-1.json", json.dumps(manifest).encode())
    results = {"artifactManifest": "gs://acme-resync-reports/artifacts-b-1.json", "numArtifacts": 1,
               "images": [{"name": "i", "digest": "sha256:" + "ab" * 32}] * 20}  # fmt: skip
    deliver(made("WORKING", "b-1", 20))
    google.app.record(made("SUCCESS", "b-1", 20, results=results))

    code, out = run_resync()

    assert code == 0, out
    [status] = shown(bitbucket)
    assert status["description"] == "Succeeded in 3m 12s: 11 tests passed (1 skipped)"
    assert (
        len(relay.decoding.essentials(made("SUCCESS", "b-1", 20, results=results))["results"]) == 1
    )  # its manifest alone


def test_the_log_of_the_function_is_not_mixed_into_the_summary(bitbucket, google, capsys):
    google.app.record(made("SUCCESS", "b-1", 20))
    code, out = run_resync()
    assert code == 0
    assert not any(line.startswith("{") for line in out.splitlines() + capsys.readouterr().out.splitlines())


# --- the budget ---------------------------------------------------------------------------------------------


def test_a_credentials_share_of_its_budget_spent_leaves_the_rest_for_a_run_from_the_first_build_not_done(
    bitbucket, google
):
    bitbucket.app.budget = 20  # X-RateLimit-Limit 20: half of it is 10 calls, three builds of 3 calls
    builds = [made("SUCCESS", f"b-{n}", 50 - n, commit=commit(n)) for n in range(5)]
    google.app.record(*builds)

    code, out = run_resync("--workers", "1")

    assert code == 3, out
    assert [bool(shown(bitbucket, commit=commit(n))) for n in range(5)] == [True, True, True, False, False]
    assert len(bitbucket.app.calls) <= 10
    assert "left for a later run: 2" in out
    assert "this run's share of credential entry 1's hourly budget is spent (10 calls)" in out
    assert f"SINCE={builds[3]['createTime']}" in out

    bitbucket.app.budget = None  # an hour later
    before = len(bitbucket.app.calls)
    code, out = run_resync(since=builds[3]["createTime"])
    assert code == 0, out
    assert all(shown(bitbucket, commit=commit(n)) for n in range(5))
    assert {c.path.split("/")[6] for c in bitbucket.app.calls[before:]} == {commit(3), commit(4)}


def test_bitbucket_saying_the_budget_is_nearly_spent_stops_that_credential(bitbucket, google):
    bitbucket.app.budget = 10  # X-RateLimit-NearLimit from the 8th call
    google.app.record(*(made("SUCCESS", f"b-{n}", 50 - n, commit=commit(n)) for n in range(6)))

    code, out = run_resync("--workers", "1", "--share", "1")

    assert code == 3, out
    assert "Bitbucket says the hourly budget of credential entry 1 is nearly spent" in out
    assert not [c for c in bitbucket.app.calls if c.status == 429]
    assert "To continue, run resync again with SINCE=" in out


def test_the_share_of_a_credentials_budget_is_spent_exactly_at_its_boundary(bitbucket, google):
    """X-RateLimit-Limit 18, SHARE 0.5: 9 calls, exactly three builds of 3 calls; the fourth is left."""
    bitbucket.app.budget = 18
    builds = [made("SUCCESS", f"b-{n}", 50 - n, commit=commit(n)) for n in range(5)]
    google.app.record(*builds)

    code, out = run_resync("--workers", "1")

    assert code == 3, out
    assert [bool(shown(bitbucket, commit=commit(n))) for n in range(5)] == [True, True, True, False, False]
    assert "credential entry 1: 9 of 9 calls" in out
    assert f"SINCE={builds[3]['createTime']}" in out


def test_a_429_stops_that_credentials_builds_and_leaves_them_for_a_later_run(three_entries, google):
    """Entry 1 serves acme/webapp, entry 2 acme/api: a 429 to entry 1 leaves its other builds, not entry 2's."""
    three_entries.app.fail_next("", "429")  # the first build's read answers; its write is refused with a 429
    google.app.record(
        made("SUCCESS", "w-1", 50, commit=commit(1)),
        made("SUCCESS", "w-2", 40, commit=commit(2)),
        made("SUCCESS", "a-1", 30, repo="acme/api", commit=commit(3)),
    )

    code, out = run_resync("--workers", "1")

    assert code == 3, out
    assert "left for a later run: build w-1: Bitbucket answered 429" in out
    assert "left for a later run: build w-2: Bitbucket answered 429 to credential entry 1: its hourly budget is " \
        "spent" in out  # fmt: skip
    assert "nearly spent" not in out
    assert "left for a later run: 2" in out
    assert [s["state"] for s in three_entries.app.shown("acme", "api", commit(3))] == ["SUCCESSFUL"]
    assert not [c for c in three_entries.app.calls if f"/commit/{commit(2)}/" in c.path]  # not even read
    assert f"SINCE={CREATED['w-1']}" in out


def test_a_failed_build_is_where_the_next_run_starts(bitbucket, google):
    bitbucket.app.fail_next(
        "", *["503"] * (relay.transport.HTTP_RETRIES + 1)
    )  # b-0's read answers, its write never does
    builds = [made("SUCCESS", f"b-{n}", 50 - n, commit=commit(n)) for n in range(3)]
    google.app.record(*builds)

    code, out = run_resync("--workers", "1")

    assert code == 1, out
    assert "failures: 1" in out
    assert f"SINCE={builds[0]['createTime']}" in out
    assert [bool(shown(bitbucket, commit=commit(n))) for n in range(3)] == [False, True, True]


def test_a_corrected_status_whose_report_was_refused_is_a_failure(bitbucket, google):
    bitbucket.app.report_answer = 403
    google.app.record(made("FAILURE", "b-1", 20))

    code, out = run_resync()

    assert code == 1, out
    assert state(bitbucket) == ("FAILED", "b-1")
    assert "failed: build b-1: " in out
    assert "refused its Code Insights report" in out
    assert "failures: 1" in out


# --- Jira: told what it missed, through the function's path -------------------------------------------------

BRANCH = "feature/ABC-123-login"  # the branch names ABC-123, each commit's message ABC-124


def name_abc_124(bitbucket) -> None:
    for n in range(8):
        bitbucket.app.commit_messages[("acme/webapp", commit(n))] = "ABC-124: log in with SSO"


@pytest.fixture
def webapp(bitbucket, jira):
    """acme/webapp's commits name ABC-124 in their messages; the Jira site `acme` is entry 2 of the credentials."""
    name_abc_124(bitbucket)
    jira.add_entry()
    return jira


def on_jira(jira, key: str) -> dict[str, str]:
    """What the issue shows of builds: each build's commit → its state."""
    return {b["references"][0]["commit"]["id"]: b["state"] for b in jira.builds(key)}


def test_a_resync_puts_the_builds_jira_missed_on_their_issues_and_bitbucket_is_written_only_where_wrong(
    bitbucket, jira, google
):
    """Jira set up after the builds ran: their statuses are on Bitbucket (one stuck), and only resync tells Jira."""
    name_abc_124(bitbucket)
    bitbucket.app.commit_messages[("acme/webapp", commit(2))] = "Tidy the form"  # names no issue
    for n in range(2):
        deliver(made("SUCCESS", f"b-{n}", 50 - n, commit=commit(n), branch=BRANCH))
    deliver(made("WORKING", "b-2", 40, commit=commit(2), branch=BRANCH))
    google.app.record(*(made("SUCCESS", f"b-{n}", 50 - n, commit=commit(n), branch=BRANCH) for n in range(2)))
    google.app.record(made("FAILURE", "b-2", 40, commit=commit(2), branch=BRANCH))
    jira.add_entry()  # the Jira site, set up now
    before = len(bitbucket.app.calls)

    code, out = run_resync("--workers", "1")

    assert code == 0, out
    assert on_jira(jira, "ABC-123") == {commit(0): "successful", commit(1): "successful", commit(2): "failed"}
    assert on_jira(jira, "ABC-124") == {commit(0): "successful", commit(1): "successful"}
    assert {c.path.split("/")[6] for c in writes(bitbucket, before)} == {commit(2)}  # its status and its report
    assert "statuses corrected: 1" in out
    assert "Jira: told of 3 builds" in out
    assert len(jira.app.calls) == 1 + 1 + 3  # a token, the site's cloud id, a call a build
    assert "Jira calls: Jira entry 2: 5 calls" in out
    assert jira.app.invalid == []

    code, out = run_resync("--workers", "1")  # again: Jira keeps what it has (the same updateSequenceNumber)
    assert code == 0, out
    assert on_jira(jira, "ABC-123") == {commit(0): "successful", commit(1): "successful", commit(2): "failed"}


def test_a_dry_run_tells_jira_nothing_and_reads_no_commits_message(webapp, bitbucket, google):
    deliver(made("WORKING", "b-1", 20, commit=commit(1), branch=BRANCH))
    google.app.record(made("FAILURE", "b-1", 20, commit=commit(1), branch=BRANCH))
    google.app.record(made("SUCCESS", "b-2", 10, commit=commit(2), branch=BRANCH))
    webapp.app.calls.clear()
    reads = len(bitbucket.app.commit_calls())

    code, out = run_resync("--dry-run")

    assert code == 0, out
    assert "statuses would be corrected: 2" in out
    assert webapp.app.calls == []  # no token, no site, no build
    assert len(bitbucket.app.commit_calls()) == reads
    assert "(dry run: Bitbucket is read, nothing is written; Jira is told nothing" in out
    assert "Jira: told" not in out


def test_jira_refusing_the_credentials_is_a_failure_of_the_resync_and_the_next_run_starts_there(
    webapp, bitbucket, google
):
    webapp.app.accept_client(webapp.client_id, webapp.client_secret, permissions=("deployments",))  # no builds
    builds = [made("SUCCESS", f"b-{n}", 50 - n, commit=commit(n), branch=BRANCH) for n in range(2)]
    google.app.record(*builds)

    code, out = run_resync("--workers", "1")

    assert code == 1, out
    assert [state(bitbucket, commit(n)) for n in range(2)] == [("SUCCESSFUL", "b-0"), ("SUCCESSFUL", "b-1")]
    assert "statuses corrected: 2" in out
    assert "failed: build b-0: Jira answered 403 to builds of Jira entry 2" in out
    assert "failures: 2" in out
    assert "Jira: told of 0 builds; not of 2 (failed: 2)" in out
    assert f"SINCE={builds[0]['createTime']}" in out

    webapp.app.accept_client(webapp.client_id, webapp.client_secret)  # the Jira admin gives the permission
    code, out = run_resync("--workers", "1", since=builds[0]["createTime"])
    assert code == 0, out
    assert on_jira(webapp, "ABC-124") == {commit(0): "successful", commit(1): "successful"}


def test_jira_not_answering_is_a_failure_of_that_build_whose_status_is_corrected_all_the_same(
    webapp, bitbucket, google
):
    webapp.app.answer_next(*[503] * (relay.transport.HTTP_RETRIES + 1), to="builds")
    builds = [made("SUCCESS", f"b-{n}", 50 - n, commit=commit(n), branch=BRANCH) for n in range(2)]
    google.app.record(*builds)

    code, out = run_resync("--workers", "1")

    assert code == 1, out
    assert "corrected: build b-0: acme/webapp@000000000000 (webapp-pr): nothing → SUCCESSFUL" in out
    assert "failed: build b-0: Jira answered 503 to builds of Jira entry 2" in out
    assert "statuses corrected: 2" in out
    assert "failures: 1" in out
    assert f"SINCE={builds[0]['createTime']}" in out
    assert on_jira(webapp, "ABC-123") == {commit(1): "successful"}


def test_jira_answering_429_stops_telling_that_entry_and_leaves_its_builds_for_a_later_run(webapp, bitbucket, google):
    webapp.app.retry_after = 0
    webapp.app.answer_next(*[429] * (relay.transport.HTTP_RETRIES + 1), to="builds")
    builds = [made("SUCCESS", f"b-{n}", 50 - n, commit=commit(n), branch=BRANCH) for n in range(3)]
    google.app.record(*builds)

    code, out = run_resync("--workers", "1")

    assert code == 3, out
    assert all(shown(bitbucket, commit=commit(n)) for n in range(3))  # Bitbucket is healed all the same
    assert len([c for c in webapp.app.calls if c.path.endswith("/bulk")]) == relay.transport.HTTP_RETRIES + 1
    assert "left for a later run: build b-1: Jira answered 429 to Jira entry 2" in out
    assert "Jira: told of 0 builds; not of 3 (left for a later run: 3)" in out
    assert f"SINCE={builds[0]['createTime']}" in out

    code, out = run_resync("--workers", "1", since=builds[0]["createTime"])  # later
    assert code == 0, out
    assert len(on_jira(webapp, "ABC-124")) == 3


def test_a_jira_that_cannot_be_reached_is_tried_once_and_its_builds_are_not_reached(webapp, bitbucket, google,
                                                                                     monkeypatch):  # fmt: skip
    monkeypatch.setenv("JIRA_API_URL", f"http://127.0.0.1:{closed_port()}")
    builds = [made("SUCCESS", f"b-{n}", 50 - n, commit=commit(n), branch=BRANCH) for n in range(2)]
    google.app.record(*builds)

    code, out = run_resync("--workers", "1")

    assert code == 3, out
    assert all(shown(bitbucket, commit=commit(n)) for n in range(2))
    assert "not reached: build b-0: Jira entry 2" in out
    assert "not reached: build b-1: Jira entry 2" in out
    assert "Jira: told of 0 builds; not of 2 (not reached: 2)" in out
    assert f"SINCE={builds[0]['createTime']}" in out


def test_each_build_told_to_jira_carries_its_commits_issues_up_to_the_end_of_the_share(webapp, bitbucket, google):
    """The read of a build's commit's message is reserved with its other calls: a build is never told to Jira
    without the issues its commit names because the share ran out, which no later run could mend (Jira ignores the
    same state sent again)."""
    bitbucket.app.budget = 20  # half of it is 10 calls: a read, the status, the report and the commit's message each
    builds = [made("SUCCESS", f"b-{n}", 50 - n, commit=commit(n), branch=BRANCH) for n in range(5)]
    google.app.record(*builds)

    code, out = run_resync("--workers", "1")

    assert code == 3, out
    assert len(bitbucket.app.calls) <= 10
    told = on_jira(webapp, "ABC-123")
    assert 0 < len(told) < 5
    assert on_jira(webapp, "ABC-124") == told

    bitbucket.app.budget = None  # an hour later
    first = next(b for n, b in enumerate(builds) if commit(n) not in told)
    code, out = run_resync("--workers", "1", since=first["createTime"])
    assert code == 0, out
    assert on_jira(webapp, "ABC-124") == on_jira(webapp, "ABC-123") == {commit(n): "successful" for n in range(5)}


def test_a_data_center_deployment_is_reserved_with_its_builds_calls_so_the_share_is_never_exceeded(both, google):
    """A build that deploys also writes its deployment on the Data Center commit: a fourth call, reserved."""
    subs = {"_DEPLOY_ENVIRONMENT": "production"}
    for n in range(3):
        google.app.record(dc_build("SUCCESS", both, f"dc-{n}", commit=commit(n), createTime=ago(50 - n),
                                   substitutions=subs))  # fmt: skip

    code, out = run_resync("--workers", "1", "--hourly-budget", "7", "--share", "1")

    assert code == 3, out
    assert len([c for c in both.app.calls if c.path.startswith("/bitbucket/rest/")]) <= 7
    assert "credential entry 2: 4 of 7 calls" in out
    assert len(both.app.deployment_calls()) == 1


# --- a Data Center server resync cannot reach --------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_data_center_server_that_does_not_answer_is_reported_as_not_reached_and_the_rest_goes_on(
    bitbucket, google, monkeypatch
):
    server = f"https://127.0.0.1:{closed_port()}"
    entries = [{"token": TOKEN}, {"server": server, "token": DC_TOKEN}]
    remember_stored(entries)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(entries))
    for n in range(2):
        b = made("SUCCESS", f"dc-{n}", 40 - n, commit=commit(n))
        b["source"]["gitSource"]["url"] = f"{server}/scm/PROJ/repo.git"
        google.app.record(b)
    google.app.record(made("SUCCESS", "cloud-1", 10))

    code, out = run_resync("--workers", "1")

    assert code == 3, out
    assert state(bitbucket) == ("SUCCESSFUL", "cloud-1")
    assert "not reached: build dc-0: GET to 127.0.0.1 failed: ConnectionError" in out
    assert f"not reached: build dc-1: {server} did not answer earlier in this run" in out  # tried once
    assert "not reached: 2" in out
    assert f"SINCE={CREATED['dc-0']}" in out  # the first build not done, though a later one was


# --- resync and live events, interleaved --------------------------------------------------------------------

LIVE = ("old FAILURE", "new WORKING", "new SUCCESS")


@pytest.mark.parametrize(
    "order",
    [(*live[:at], "resync", *live[at:]) for live in itertools.permutations(LIVE) for at in range(4)],
    ids=lambda order: ", then ".join(order),
)
def test_live_events_and_a_resync_in_any_order_end_on_the_newest_builds_final_state(bitbucket, google, order):
    old, new = made("FAILURE", "b-old", 30), made("SUCCESS", "b-new", 20)
    google.app.record(old, new)
    messages = {
        "old FAILURE": old,
        "new WORKING": made("WORKING", "b-new", 20),
        "new SUCCESS": new,
    }
    for step in order:
        if step == "resync":
            assert run_resync()[0] == 0
        else:
            deliver(messages[step])

    assert state(bitbucket) == ("SUCCESSFUL", "b-new")
    assert bitbucket.app.went_backwards() == []
    assert went_to_older(bitbucket.app.history, CREATED) == []


def test_a_resync_running_while_live_events_arrive_replaces_no_newer_builds_status(bitbucket, google):
    bitbucket.app.latency = 0.01
    finished, running = range(0, 8), range(8, 16)
    for n in finished:  # resync heals these while their final messages are redelivered
        deliver(made("WORKING", f"done-{n}", 40, commit=commit(n)))
        google.app.record(made("FAILURE", f"done-{n}", 40, commit=commit(n)))
    for n in running:  # an older run finished; the newer one runs while resync does
        google.app.record(
            made("FAILURE", f"old-{n}", 40, commit=commit(n)), made("WORKING", f"new-{n}", 5, commit=commit(n))
        )
    live = [made("FAILURE", f"done-{n}", 40, commit=commit(n)) for n in finished]
    for n in running:
        live += [made("WORKING", f"new-{n}", 5, commit=commit(n)), made("SUCCESS", f"new-{n}", 5, commit=commit(n))]
    errors = []

    def deliver_all() -> None:
        try:
            for message in live:
                deliver(message)
        except Exception as error:  # shown by the assertion below
            errors.append(error)

    sender = threading.Thread(target=deliver_all)
    sender.start()
    code, out = run_resync()
    sender.join()

    assert errors == []
    assert code == 0, out
    assert [state(bitbucket, commit(n)) for n in finished] == [("FAILED", f"done-{n}") for n in finished]
    assert [state(bitbucket, commit(n)) for n in running] == [("SUCCESSFUL", f"new-{n}") for n in running]
    assert bitbucket.app.went_backwards() == []
    assert went_to_older(bitbucket.app.history, CREATED) == []


# --- the deployment's configuration ------------------------------------------------------------------------

DESCRIBED = {
    "name": "projects/acme-ci/locations/europe-west1/functions/bitbucket-build-status",
    "serviceConfig": {
        "environmentVariables": {
            "THREADS": "80",
            "BITBUCKET_CREDENTIALS_FILE": "/etc/secrets/bitbucket-credentials.json",
            "BUILD_PROJECTS": "acme-ci team-a",
        },
        "secretVolumes": [
            {
                "mountPath": "/etc/secrets",
                "projectId": "acme-ci",
                "secret": "bitbucket-build-status-credentials",
                "versions": [{"version": "latest", "path": "bitbucket-credentials.json"}],
            }
        ],
    },
}


def test_a_secret_the_deployment_mounts_as_a_file_is_read_with_secret_managers_api():
    env = resync.deployment.deployment_env(DESCRIBED, "acme-ci")
    assert env["CREDENTIALS_SECRET"] == "projects/acme-ci/secrets/bitbucket-build-status-credentials/versions/latest"
    assert "BITBUCKET_CREDENTIALS_FILE" not in env
    assert env["BUILD_PROJECTS"] == "acme-ci team-a"


def test_a_secret_the_deployment_sets_as_a_variable_is_read_with_secret_managers_api():
    service = {"secretEnvironmentVariables": [{"key": "BITBUCKET_CREDENTIALS", "secret": "bb", "version": "3"}]}
    env = resync.deployment.deployment_env({"serviceConfig": service}, "acme-ci")
    assert env == {"CREDENTIALS_SECRET": "projects/acme-ci/secrets/bb/versions/3"}


def test_a_secret_mounted_from_another_project_is_read_there():
    described = json.loads(json.dumps(DESCRIBED))
    described["serviceConfig"]["secretVolumes"][0]["projectId"] = "secrets-hub"
    env = resync.deployment.deployment_env(described, "acme-ci")
    assert env["CREDENTIALS_SECRET"] == (
        "projects/secrets-hub/secrets/bitbucket-build-status-credentials/versions/latest"
    )


def test_a_secret_volume_without_versions_mounts_the_latest_in_a_file_named_after_the_secret():
    service = {
        "environmentVariables": {"BITBUCKET_CREDENTIALS_FILE": "/etc/secrets/bb-credentials"},
        "secretVolumes": [{"mountPath": "/etc/secrets", "secret": "bb-credentials"}],
    }
    env = resync.deployment.deployment_env({"serviceConfig": service}, "acme-ci")
    assert env == {"CREDENTIALS_SECRET": "projects/acme-ci/secrets/bb-credentials/versions/latest"}


def test_a_mounted_file_no_secret_volume_provides_is_a_configuration_error():
    described = json.loads(json.dumps(DESCRIBED))
    described["serviceConfig"]["secretVolumes"][0]["mountPath"] = "/var/secrets"
    with pytest.raises(relay.errors.ConfigurationError, match="no secret mounts"):
        resync.deployment.deployment_env(described, "acme-ci")


def test_resync_reads_the_deployments_credentials_from_secret_manager_not_the_persons_own(
    bitbucket, google, monkeypatch, tmp_path
):
    secret = "projects/acme-ci/secrets/bitbucket-build-status-credentials"
    google.app.add_secret_version(secret, json.dumps({"token": TOKEN}).encode())
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": "a-persons-own-token-N_jXRyFnZ4zu6MnOjoW40jOx"}))
    monkeypatch.setenv("SECRET_MANAGER_API_ENDPOINT", google.endpoint)
    described = json.loads(json.dumps(DESCRIBED))
    described["serviceConfig"]["environmentVariables"]["BITBUCKET_API_URL"] = bitbucket.api_url
    (tmp_path / "function.json").write_text(json.dumps(described))
    google.app.record(made("SUCCESS", "b-1", 10))

    code, out = run_resync("--function-config", str(tmp_path / "function.json"))

    assert code == 0, out
    assert state(bitbucket) == ("SUCCESSFUL", "b-1")
    assert google.app.counts["secretmanager.access"] >= 1


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--since", "yesterday"], "neither an age"),
        (["--since", "24h", "--share", "0"], "SHARE must be in (0, 1]"),
        (["--since", "24h", "--locations", "../x"], "LOCATIONS"),
    ],
)
def test_a_bad_command_line_says_what_is_wrong(args, said, capsys, bitbucket):
    assert resync.run(["--project", "acme-ci", *args], dict(os.environ), io.StringIO()) == 2
    assert said in capsys.readouterr().err


def test_permission_to_list_builds_refused_is_a_configuration_error_naming_the_permission(bitbucket, google, capsys):
    google.app.cloud_build_answer = 403
    assert run_resync()[0] == 2
    assert "cloudbuild.builds.list (roles/cloudbuild.builds.viewer)" in capsys.readouterr().err


FAKE_GCLOUD = """#!/usr/bin/env bash
# A stand-in for gcloud: the deployed function's configuration, as `gcloud functions describe` prints it.
case " $* " in
  *" functions describe bitbucket-build-status "*"--region=europe-west1 --project=acme-ci --format=json "*)
    cat "$FAKE_FUNCTION" ;;
  *) echo "unexpected: gcloud $*" >&2; exit 1 ;;
esac
"""


def test_make_resync_heals_with_the_deployed_functions_configuration(bitbucket, google, monkeypatch, tmp_path):
    secret = "projects/acme-ci/secrets/bitbucket-build-status-credentials"
    google.app.add_secret_version(secret, json.dumps({"token": TOKEN}).encode())
    described = json.loads(json.dumps(DESCRIBED))
    described["serviceConfig"]["environmentVariables"]["BITBUCKET_API_URL"] = bitbucket.api_url
    (tmp_path / "function.json").write_text(json.dumps(described))
    (tmp_path / "gcloud").write_text(FAKE_GCLOUD)
    (tmp_path / "gcloud").chmod(0o755)
    deliver(made("WORKING", "b-1", 30))
    google.app.record(made("FAILURE", "b-1", 30))
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FAKE_FUNCTION": str(tmp_path / "function.json"),
           "SECRET_MANAGER_API_ENDPOINT": google.endpoint}  # fmt: skip

    ran = subprocess.run(
        ["make", "--no-print-directory", "resync", "PROJECT=acme-ci", "REGION=europe-west1", "SINCE=24h"],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert state(bitbucket) == ("FAILED", "b-1")
    assert "in global, europe-west1" in ran.stdout
    assert "statuses corrected: 1 (INPROGRESS → FAILED: 1)" in ran.stdout
    assert "secretmanager.versions.access on projects/acme-ci/secrets/bitbucket-build-status-credentials" in ran.stderr


FAKE_HUB_GCLOUD = """#!/usr/bin/env bash
# A stand-in for gcloud: the function deployed in the hub project, as `gcloud functions describe` prints it.
case " $* " in
  *" functions describe bitbucket-build-status "*"--region=europe-west1 --project=hub-ci --format=json "*)
    cat "$FAKE_FUNCTION" ;;
  *) echo "unexpected: gcloud $*" >&2; exit 1 ;;
esac
"""


def test_make_resync_heals_a_teams_project_with_the_hubs_deployment(bitbucket, google, monkeypatch, tmp_path):
    """PROJECT is the team's project whose builds are listed; FUNCTION_PROJECT the hub where the function runs."""
    secret = "projects/hub-ci/secrets/bitbucket-build-status-credentials"
    google.app.add_secret_version(secret, json.dumps({"token": TOKEN}).encode())
    described = json.loads(json.dumps(DESCRIBED))
    described["serviceConfig"]["environmentVariables"]["BITBUCKET_API_URL"] = bitbucket.api_url
    described["serviceConfig"]["secretVolumes"][0]["projectId"] = "hub-ci"
    (tmp_path / "function.json").write_text(json.dumps(described))
    (tmp_path / "gcloud").write_text(FAKE_HUB_GCLOUD)
    (tmp_path / "gcloud").chmod(0o755)
    team_build = made("FAILURE", "t-1", 30)
    team_build["projectId"] = team_build["substitutions"]["PROJECT_ID"] = "team-a"
    google.app.record(team_build)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FAKE_FUNCTION": str(tmp_path / "function.json"),
           "SECRET_MANAGER_API_ENDPOINT": google.endpoint}  # fmt: skip

    ran = subprocess.run(
        ["make", "--no-print-directory", "resync", "PROJECT=team-a", "FUNCTION_PROJECT=hub-ci", "REGION=europe-west1",
         "SINCE=24h", "LOCATIONS=global"],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Resync of team-a since" in ran.stdout
    assert state(bitbucket) == ("FAILED", "t-1")
