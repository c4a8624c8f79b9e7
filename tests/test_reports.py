"""Code Insights reports: with every final state, one report per status on the same site and with the same
credential, saying why a build failed; through the function and both stand-ins, which accept a report only
as Atlassian's descriptions allow."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

import relay.config
import relay.errors
import relay.report
import relay.reporting
import relay.status
import relay.translate
from standins.bitbucket import Bitbucket
from standins.builds import COMMIT, build
from tests.conftest import dc_build, deliver, log_lines

TIMING = {"startTime": "2026-11-27T09:01:00Z", "endTime": "2026-11-27T09:03:00Z"}
UNIT_TESTS = {"id": "unit-tests", "name": "golang:1.23", "args": ["go", "test", "./..."], "status": "FAILURE",
              "exitCode": 1, "timing": TIMING}  # fmt: skip
STEPS_FAILING = [
    {"id": "checkout", "name": "gcr.io/cloud-builders/git", "args": ["fetch"], "status": "SUCCESS"},
    UNIT_TESTS,
    {"id": "deploy", "name": "gcr.io/google.com/cloudsdktool/cloud-sdk", "args": ["gcloud", "run"], "status": "QUEUED"},
]
FAILURE_INFO = {
    "type": "USER_BUILD_STEP",
    "detail": 'Build step 1 "golang:1.23" failed: step exited with non-zero status: 1',
}


@pytest.fixture(params=["cloud", "data center"])
def site(request, bitbucket) -> Any:
    """(make a build of this site, the reports the site shows for a commit, its result words, its calls)."""
    if request.param == "cloud":

        def make(status: str, build_id: str = "b-1", **kwargs: Any) -> dict:
            return build(status, build_id, **kwargs)

        return make, lambda: bitbucket.app.shown_reports("acme", "webapp", COMMIT), ("PASSED", "FAILED"), bitbucket.app
    server = request.getfixturevalue("both")

    def make_on_server(status: str, build_id: str = "b-1", **kwargs: Any) -> dict:
        return dc_build(status, server, build_id, **kwargs)

    return make_on_server, lambda: server.app.shown_reports("PROJ", "repo", COMMIT), ("PASS", "FAIL"), server.app


def fields(report: dict) -> dict[str, Any]:
    return {f["title"]: f["value"] for f in report["data"]}


def test_a_failing_unit_test_step_is_named_in_a_failed_report_and_a_passing_rerun_replaces_it(site):
    make, reports, (passed, failed), _ = site
    for status in ("QUEUED", "WORKING"):
        deliver(make(status))
    failing = make("FAILURE", steps=STEPS_FAILING, failureInfo=FAILURE_INFO)
    deliver(failing)
    [report] = reports()
    assert report["result"] == failed
    assert report["link"] == failing["logUrl"]
    assert report["title"] == "webapp-pr: Failed after 3m 12s: " + FAILURE_INFO["detail"]
    assert "Failed step: unit-tests (golang:1.23): go test ./..., exit code 1" in report["details"]
    assert "Steps: 3 (1 passed, 1 failed, 1 did not run)" in report["details"]
    assert fields(report)["Failed step"] == "unit-tests (golang:1.23): go test ./..., exit code 1"
    assert fields(report)["Steps passed"] == "1 of 3"
    assert fields(report)["Duration"] == 192_050
    assert fields(report)["Trigger"] == "webapp-pr"
    link = fields(report)["Build log"]
    assert link["href"] == failing["logUrl"]
    passing_steps = [{**step, "status": "SUCCESS", "exitCode": 0} for step in STEPS_FAILING]
    for status in ("QUEUED", "WORKING"):
        deliver(make(status, "b-2", createTime="2026-11-27T09:10:00Z"))
    deliver(make("SUCCESS", "b-2", createTime="2026-11-27T09:10:00Z", steps=passing_steps))
    [report] = reports()  # the same report, replaced
    assert report["result"] == passed
    assert "b-2" in report["link"]
    assert "Failed step" not in fields(report)
    assert fields(report)["Steps passed"] == "3 of 3"


@pytest.mark.parametrize(
    ("status", "words"),
    [("CANCELLED", "Cancelled"), ("TIMEOUT", "Timed out after 3m 12s"), ("EXPIRED", "Expired in queue")],
)
def test_a_stopped_timed_out_or_expired_build_says_so_and_does_not_pass(site, status, words):
    make, reports, (_, failed), _ = site
    deliver(make(status))
    [report] = reports()
    assert report["result"] == failed
    assert report["details"].splitlines()[0].startswith(words)


def test_a_build_passing_with_steps_allowed_to_fail_says_so_in_its_status_and_report(bitbucket):
    steps = [{"id": "lint", "name": "golangci/golangci-lint", "status": "FAILURE", "allowFailure": True, "exitCode": 2},
             {"id": "test", "name": "golang:1.23", "status": "SUCCESS"}]  # fmt: skip
    deliver(build("SUCCESS", steps=steps))
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Succeeded in 3m 12s, 1 step allowed to fail"
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert report["result"] == "PASSED"
    assert "Steps: 2 (1 passed, 1 allowed to fail)" in report["details"]


def test_a_rejected_approval_says_who_rejected_it_and_why(bitbucket):
    approval = {"state": "REJECTED", "result": {"decision": "REJECTED", "approverAccount": "lead@acme.example",
                                                "comment": "not on a Friday"}}  # fmt: skip
    deliver(build("CANCELLED", approval=approval))
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Cancelled: approval rejected by lead@acme.example (not on a Friday)"


def test_a_normal_lifecycle_costs_five_calls_with_its_report(site):
    make, _, _, app = site
    for status in ("QUEUED", "WORKING", "SUCCESS", "SUCCESS"):
        deliver(make(status))
    assert len(app.status_calls()) == 4
    assert [c.method for c in app.report_calls()] == ["PUT"]  # the duplicate result writes nothing


def test_a_report_replacing_a_passing_builds_costs_no_delete_for_it_carries_no_annotations(site):
    """A passing build's report has no annotations, and its own write removed any older ones: the next build's
    report replaces it with one call (a failed build's is deleted first, with its annotations: test_log_excerpts)."""
    make, reports, (_, failed), app = site
    deliver(make("SUCCESS", "b-1", createTime="2026-11-27T09:00:00Z"))
    deliver(make("FAILURE", "b-2", createTime="2026-11-27T09:10:00Z"))
    assert [r["result"] for r in reports()] == [failed]
    assert [c.method for c in app.report_calls()] == ["PUT", "PUT"]


def test_huge_hostile_and_non_ascii_builds_still_give_a_report_the_site_accepts(site):
    make, reports, _, app = site
    steps = [{"id": f"step-{n}-" + "ü" * 300, "name": "img\u202e\n" * 50, "args": ["x" * 5000, "\x00\x1b[31m"],
              "status": "FAILURE" if n == 150 else "SUCCESS", "exitCode": 3} for n in range(200)]  # fmt: skip
    warnings = [{"text": "deprecated\n" * 400, "priority": "WARNING"} for _ in range(12)]
    b = make("FAILURE", steps=steps, warnings=warnings, failureInfo={"detail": "日本語の説明 " * 1000},
             trigger_name="名前" * 600)  # fmt: skip
    deliver(b)
    [report] = reports()
    assert all(call.status in (200, 201) for call in app.report_calls())
    assert len(report["title"]) <= 450
    assert len(report["details"]) <= 2000
    assert len(report["data"]) <= 6
    assert all(c.isprintable() for line in report["details"].splitlines() for c in line)
    assert "\u202e" not in json.dumps(report, ensure_ascii=False)
    assert "Steps: 200 (199 passed, 1 failed)" in report["details"]
    assert "and 9 more warnings" in report["details"]


def test_a_nearly_spent_budget_skips_the_report_with_one_info_line_and_the_status_still_lands(bitbucket, capsys):
    bitbucket.app.budget, bitbucket.app.near_limit_share = 1000, 0.001  # near the limit at once
    deliver(build("SUCCESS"))
    warning, line = log_lines(capsys.readouterr().out)
    assert "hourly budget of credential entry 1 is nearly spent" in warning["message"]  # said by the status's answer
    assert (line["severity"], line["report"]) == ("INFO", "skipped")
    assert line["message"] == f"Posted SUCCESSFUL (Succeeded in 3m 12s); {relay.reporting.REPORT_SKIPPED}"
    assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", COMMIT)] == ["SUCCESSFUL"]
    assert bitbucket.app.report_calls() == []


@pytest.mark.parametrize("answer", [400, 403])
def test_a_refused_report_is_one_warning_naming_the_site_and_the_message_is_acknowledged(site, capsys, answer):
    make, _, _, app = site
    app.report_answer = answer
    deliver(make("FAILURE"))  # acknowledged: no raise
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING"
    assert line["report"] == "refused"
    refused = "refused its Code Insights report: Bitbucket answered " + str(answer)
    by = (
        "Bitbucket Cloud"
        if isinstance(app, Bitbucket)
        else r"the Data Center server https://127\.0\.0\.1:\d+/bitbucket"
    )
    assert re.search(f"; {by} {refused}", line["message"]), line["message"]
    assert len([c for c in app.status_calls() if c.method == "POST"]) == 1


def test_a_failing_report_endpoint_redelivers_without_posting_the_status_again(site):
    make, reports, (_, failed), app = site
    for status in ("QUEUED", "WORKING"):
        deliver(make(status))
    app.report_answer = 503
    with pytest.raises(relay.errors.TransientError):
        deliver(make("FAILURE"))
    app.report_answer = None
    deliver(make("FAILURE"))  # the redelivery
    assert [r["result"] for r in reports()] == [failed]
    assert len([c for c in app.status_calls() if c.method == "POST"]) == 3  # Queued, Running, the result once


@pytest.mark.parametrize("older", [False, True], ids=["no report yet", "an older builds report"])
def test_a_report_whose_write_failed_is_written_by_the_redelivery_on_another_instance(site, new_instance, older):
    """The status landed, its report did not: the redelivery reaches a new instance, which finds the status shown
    and reads the report; none, or an older build's, is no report of this build's, so it writes this one."""
    make, reports, (_, failed), app = site
    if older:
        deliver(make("SUCCESS", "b-1", createTime="2026-11-27T09:00:00Z"))
    app.report_answer = 503
    with pytest.raises(relay.errors.TransientError):
        deliver(make("FAILURE", "b-2", createTime="2026-11-27T09:10:00Z"))
    app.report_answer = None
    new_instance()
    deliver(make("FAILURE", "b-2", createTime="2026-11-27T09:10:00Z"))
    [report] = reports()
    assert (report["result"], "b-2" in report["link"]) == (failed, True)
    assert len([c for c in app.status_calls() if c.method == "POST"]) == 1 + older


def test_duplicates_of_a_written_report_cost_a_new_instance_one_read_and_then_nothing(site, new_instance):
    """Pub/Sub delivers a message again, to another instance: it reads the status and the report (written, with
    this build's link) and writes neither; a further duplicate reaching that instance costs no call at all."""
    make, reports, (_, failed), app = site
    deliver(make("FAILURE"))
    new_instance()
    deliver(make("FAILURE"))
    calls = len(app.calls)
    deliver(make("FAILURE"))
    assert app.calls[calls:] == []
    assert [r["result"] for r in reports()] == [failed]
    assert [c.method for c in app.report_calls()] == ["PUT", "GET"]
    assert len([c for c in app.status_calls() if c.method == "POST"]) == 1


def test_code_insights_off_writes_no_report(bitbucket, monkeypatch):
    monkeypatch.setenv("CODE_INSIGHTS", "off")
    deliver(build("FAILURE", steps=STEPS_FAILING))
    assert bitbucket.app.report_calls() == []
    assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", COMMIT)] == ["FAILED"]


def test_code_insights_must_be_on_or_off(bitbucket, monkeypatch):
    monkeypatch.setenv("CODE_INSIGHTS", "maybe")
    with pytest.raises(relay.errors.ConfigurationError, match="CODE_INSIGHTS must be on or off"):
        deliver(build("SUCCESS"))


def test_an_older_builds_late_result_writes_no_report_over_the_newer_builds(bitbucket, google, new_instance):
    newer = build("SUCCESS", "b-2", createTime="2026-11-27T09:10:00Z")
    google.app.record(newer)  # a new instance asks Cloud Build when the shown build was created
    deliver(newer)
    deliver(build("FAILURE", "b-1", createTime="2026-11-27T09:00:00Z"))  # redelivered late: stale
    new_instance()
    deliver(build("FAILURE", "b-1", createTime="2026-11-27T09:00:00Z"))
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert (report["result"], "b-2" in report["link"]) == ("PASSED", True)
    assert len(bitbucket.app.report_calls()) == 1


def test_a_data_center_report_is_keyed_cloud_build_and_the_status_key_a_required_report_names(both):
    """An admin requires `cloud-build-<the status's key>`; a key too long for Cloud's 40 characters is kept whole on
    the server (up to 255), so the report's key follows the server's status key, not Cloud's hash of it."""
    key = "release-pipeline-for-the-payments-service-eu"  # 44 characters: hashed for Cloud, kept on the server
    deliver(dc_build("FAILURE", both, substitutions={"_BITBUCKET_KEY": key, "COMMIT_SHA": COMMIT}))
    [status] = both.shown()
    assert status["key"] == key
    assert [c.path.rsplit("/", 1)[-1] for c in both.app.report_calls()] == [f"cloud-build-{key}"]


@pytest.mark.parametrize("length", [243, 244, 255])
def test_a_data_center_reports_key_always_begins_cloud_build_however_long_the_status_key(both, length):
    """Never a key another tool's report could hold: past 255 characters the status key is hashed, not the prefix."""
    key = "k" * length
    deliver(dc_build("FAILURE", both, substitutions={"_BITBUCKET_KEY": key, "COMMIT_SHA": COMMIT}))
    [report_key] = {c.path.rsplit("/", 1)[-1] for c in both.app.report_calls()}
    assert report_key.startswith("cloud-build-")
    assert len(report_key) <= 255
    assert report_key == f"cloud-build-{key}" if length <= 243 else len(report_key) == len("cloud-build-") + 40


def test_a_429_on_the_report_skips_it_and_the_status_still_lands(site, capsys):
    make, reports, _, app = site
    app.report_answer = 429
    deliver(make("FAILURE"))  # acknowledged: the report is not worth a redelivery once the budget is spent
    [line] = log_lines(capsys.readouterr().out)
    assert (line["severity"], line["report"]) == ("INFO", "skipped")
    assert line["message"].endswith(relay.reporting.REPORT_SKIPPED)
    assert reports() == []
    assert len([c for c in app.status_calls() if c.method == "POST"]) == 1


def report_for(**build_fields: Any) -> relay.report.Report:
    update = relay.translate.translate(build(**build_fields), relay.config.Config())
    assert isinstance(update, relay.translate.Update)
    assert update.report is not None
    return update.report


@pytest.mark.parametrize(("status", "cause"), [("FAILURE", True), ("CANCELLED", False), ("EXPIRED", False)])
def test_only_a_failed_report_names_the_cause(status, cause):
    """Cloud Build's statusDetail of a cancelled or expired build is not why anything failed."""
    report = report_for(status=status, statusDetail="stopped by a person", failureInfo=FAILURE_INFO)
    assert ("Cause (user build step):" in report.details) is cause


@pytest.mark.parametrize(("warnings", "said"), [(3, None), (4, "and 1 more warnings"), (5, "and 2 more warnings")])
def test_the_first_three_warnings_are_shown_and_the_rest_counted(warnings, said):
    report = report_for(
        status="SUCCESS", warnings=[{"text": f"warning {n}", "priority": "INFO"} for n in range(warnings)]
    )
    assert [line for line in report.details.splitlines() if line.startswith("Warning:")] == [
        f"Warning: warning {n}" for n in range(min(warnings, relay.report.WARNINGS_SHOWN))
    ]
    assert ("more warnings" in report.details) is (said is not None)
    if said:
        assert said in report.details


def test_every_control_character_within_the_report_becomes_a_space():
    """Placed early, so clipping cannot be what removes them."""
    hostile = "a\x00b\x1b[31mc\td\u2028e\u202ef\u200bg"
    report = report_for(
        status="FAILURE", trigger_name=hostile, statusDetail=hostile, failureInfo={"type": "X", "detail": hostile},
        warnings=[{"text": hostile}], steps=[{**UNIT_TESTS, "id": hostile, "args": [hostile]}],
    )  # fmt: skip
    for text in (report.title, report.details, report.trigger):
        for line in text.splitlines():
            assert line.isprintable(), line
    assert "a b [31mc d e f g" in report.title


@pytest.mark.parametrize(
    ("step", "status", "shown"),
    [
        ({"id": "deploy", "name": "gcr.io/cloud-builders/gcloud", "entrypoint": "bash", "args": ["-c", "make deploy"]},
         "TIMEOUT", "deploy (gcr.io/cloud-builders/gcloud): bash -c make deploy, timed out"),
        ({"args": ["make"]}, "FAILURE", "step 2: make, failed"),
        ({"id": "lint", "exitCode": 2}, "FAILURE", "lint, exit code 2"),
    ],
)  # fmt: skip
def test_the_failed_steps_line_names_its_id_image_entrypoint_and_args_and_how_it_ended(step, status, shown):
    """The report's 'Failed step' line: a step without an image shows none, one without a command no colon, and a
    step that ran out of time says so rather than an exit code."""
    assert relay.status.step_text(step, 2, status) == shown
