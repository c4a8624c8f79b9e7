"""Why it failed, down to the line, through the stand-ins: a failed step's last lines read from Cloud Logging (its
stand-in plays entries.list) end the report, and the errors in them become annotations on both sites; only for a
private repository (or LOG_EXCERPTS=all), never a credential, and the status and report land whatever Cloud Logging
answers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import relay.budget
import relay.cloud_logging
import relay.config
import relay.errors
import relay.repository
import relay.scope
import relay.translate
import relay.transport
import relay.warm
from standins.bitbucket import error
from standins.builds import COMMIT, build
from tests.conftest import TOKEN, dc_build, deliver, log_lines

LOGS = Path(__file__).resolve().parent / "data" / "logs"
UNIT = 'Step #1 - "unit-tests"'
STEPS = [
    {"id": "checkout", "name": "gcr.io/cloud-builders/git", "status": "SUCCESS"},
    {"id": "unit-tests", "name": "python:3.12", "args": ["pytest"], "dir": "service", "status": "FAILURE",
     "exitCode": 1},
]  # fmt: skip
FAILING_SUITE = """
def login(user):
    return user.upper()


def test_login():
    assert login("ada") == "Ada"


def test_logout():
    assert True
"""


@pytest.fixture(scope="module")
def pytest_output(tmp_path_factory) -> list[str]:
    """What pytest itself prints for a failing test in service/tests/test_auth.py."""
    service = tmp_path_factory.mktemp("service")
    (service / "tests").mkdir()
    (service / "tests" / "test_auth.py").write_text(FAILING_SUITE)
    ran = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests"], cwd=service,
                         capture_output=True, text=True, check=False)  # fmt: skip
    return ran.stdout.splitlines()


@pytest.fixture(params=["cloud", "data center"])
def site(request, bitbucket) -> Any:
    """(make a build of this site, its annotations, its report, its app, its Bitbucket calls)."""
    if request.param == "cloud":

        def make(status: str, build_id: str = "b-1", **kwargs: Any) -> dict:
            return build(status, build_id, **kwargs)

        def reports() -> list[dict]:
            return bitbucket.app.shown_reports("acme", "webapp", COMMIT)

        return make, lambda: bitbucket.app.shown_annotations("acme", "webapp", COMMIT), reports, bitbucket.app
    server = request.getfixturevalue("both")

    def make_on_server(status: str, build_id: str = "b-1", **kwargs: Any) -> dict:
        return dc_build(status, server, build_id, **kwargs)

    def server_reports() -> list[dict]:
        return server.app.shown_reports("PROJ", "repo", COMMIT)

    return make_on_server, lambda: server.app.shown_annotations("PROJ", "repo", COMMIT), server_reports, server.app


@pytest.fixture
def reads(google) -> Any:
    """How many times Cloud Logging's entries.list was asked since the test began."""
    start = google.app.counts["logging.entries.list"]
    return lambda: google.app.counts["logging.entries.list"] - start


def lifecycle(make, build_id: str, final: str, **kwargs: Any) -> None:
    for status in ("QUEUED", "WORKING", final):
        deliver(make(status, build_id, **kwargs))


def test_a_failing_pytest_step_ends_the_report_with_its_lines_and_annotates_the_failing_line(
    bitbucket, google, pytest_output
):
    google.app.write_log("acme-ci", "b-1", {UNIT: pytest_output})
    lifecycle(build, "b-1", "FAILURE", steps=STEPS)

    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert report["details"].endswith(pytest_output[-1])
    assert "Last lines of step 1 (unit-tests):" in report["details"]
    assert "E       AssertionError: assert 'ADA' == 'Ada'" in report["details"]
    [annotation] = bitbucket.app.shown_annotations("acme", "webapp", COMMIT)
    assert (annotation["path"], annotation["line"], annotation["severity"]) == ("service/tests/test_auth.py", 7, "HIGH")
    assert annotation["summary"].startswith("AssertionError: assert 'ADA' == 'Ada'")
    assert (annotation["annotation_type"], annotation["result"]) == ("BUG", "FAILED")
    asked = google.app.log_filters[-1]
    assert 'labels.build_step="Step #1 - \\"unit-tests\\""' in asked


def test_a_failing_tsc_step_on_a_data_center_server_leaves_high_annotations_on_each_file_and_line(both, google):
    steps = [{"id": "typecheck", "name": "node:22", "args": ["npx", "tsc"], "dir": "web", "status": "FAILURE"}]
    google.app.write_log("acme-ci", "b-1", {'Step #0 - "typecheck"': (LOGS / "tsc.txt").read_text().splitlines()})
    lifecycle(lambda s, b, **k: dc_build(s, both, b, **k), "b-1", "FAILURE", steps=steps)

    annotations = both.app.shown_annotations("PROJ", "repo", COMMIT)
    assert [(a["path"], a["line"], a["severity"], a["type"]) for a in annotations] == [
        ("web/src/app.ts", 2, "HIGH", "BUG"),
        ("web/src/app.ts", 6, "HIGH", "BUG"),
    ]
    assert all(a["message"] == "Type 'string' is not assignable to type 'number'. (TS2322)" for a in annotations)
    [report] = both.app.shown_reports("PROJ", "repo", COMMIT)
    assert report["details"].endswith(
        "src/app.ts(6,3): error TS2322: Type 'string' is not assignable to type 'number'."
    )
    assert len(report["details"]) <= 2000


def test_a_passing_rerun_on_the_same_commit_leaves_no_annotation_of_the_failed_run(site, google, pytest_output):
    make, annotations, reports, app = site
    google.app.write_log("acme-ci", "b-1", {UNIT: pytest_output})
    lifecycle(make, "b-1", "FAILURE", steps=STEPS, createTime="2026-11-27T09:00:00Z")
    assert annotations()
    deletes = len([c for c in app.calls if c.method == "DELETE"])

    lifecycle(make, "b-2", "SUCCESS", createTime="2026-11-27T09:10:00Z")

    assert annotations() == []
    [report] = reports()
    assert report["result"] in ("PASSED", "PASS")
    assert len([c for c in app.calls if c.method == "DELETE"]) == deletes + 1  # the failed run's report, once


def test_a_public_repository_receives_no_log_line(site, google, pytest_output, reads):
    make, annotations, reports, app = site
    if hasattr(app, "public_projects"):
        app.public_projects.add("PROJ")  # a Data Center project's repositories are public with it
    else:
        app.public.add("acme/webapp")
    google.app.write_log("acme-ci", "b-1", {UNIT: pytest_output})
    lifecycle(make, "b-1", "FAILURE", steps=STEPS)

    [report] = reports()
    assert not any(line in report["details"] for line in pytest_output if len(line) > 20)
    assert "No log excerpt: the repository is not known to be private (LOG_EXCERPTS=private)" in report["details"]
    assert annotations() == []
    assert reads() == 0


def test_log_excerpts_all_shows_a_public_repositorys_lines_and_off_reads_nothing(
    bitbucket, google, monkeypatch, pytest_output, reads
):
    bitbucket.app.public.add("acme/webapp")
    google.app.write_log("acme-ci", "b-1", {UNIT: pytest_output})
    monkeypatch.setenv("LOG_EXCERPTS", "all")
    deliver(build("FAILURE", "b-1", steps=STEPS))
    assert bitbucket.app.shown_annotations("acme", "webapp", COMMIT)
    monkeypatch.setattr(relay.warm, "instance", None)
    monkeypatch.setenv("LOG_EXCERPTS", "off")
    listed = reads()
    deliver(build("FAILURE", "b-2", steps=STEPS, commit="2" * 40))
    assert reads() == listed
    assert bitbucket.app.shown_annotations("acme", "webapp", "2" * 40) == []


def test_a_credential_printed_in_the_log_never_reaches_bitbucket(site, google):
    make, annotations, reports, app = site
    leaked = [
        f"+ curl -H 'Authorization: Bearer {TOKEN}' https://api.bitbucket.org/2.0/user",
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ./deploy.sh",
        f"tests/test_auth.py:3: error: token {TOKEN} refused",
    ]
    google.app.write_log("acme-ci", "b-1", {UNIT: leaked})
    lifecycle(make, "b-1", "FAILURE", steps=STEPS)

    sent = str(reports()) + str(annotations()) + str([c.body for c in app.calls])
    assert TOKEN not in sent
    assert "wJalrXUtnFEMI" not in sent
    assert "[masked]" in reports()[0]["details"]


def test_without_permission_to_read_logs_the_status_and_report_land_and_the_log_names_the_role(
    bitbucket, google, capsys
):
    google.app.logging_answer = 403
    for n in range(2):
        deliver(build("FAILURE", f"b-{n}", steps=STEPS, commit=f"{n + 1:040x}"))

    warnings = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    [warning] = warnings  # once per instance
    assert "roles/logging.viewAccessor on the log view LOG_VIEW" in warning["message"]
    assert "roles/logging.viewer" in warning["message"]
    for n in range(2):
        assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", f"{n + 1:040x}")] == ["FAILED"]
        [report] = bitbucket.app.shown_reports("acme", "webapp", f"{n + 1:040x}")
        assert (
            "No log excerpt: the function may not read the build's log (Cloud Logging answered 403)"
            in (report["details"])
        )


def test_cloud_loggings_quota_spent_costs_the_excerpt_never_the_status(bitbucket, google):
    google.app.logging_answer = 429
    deliver(build("FAILURE", "b-1", steps=STEPS))
    assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", COMMIT)] == ["FAILED"]
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert "No log excerpt: Cloud Logging's read quota is spent for now (429)" in report["details"]


class StoppedClock:
    """The function's clock, stopped: it moves only while the function waits (time.sleep), so an event's deadline
    falls to the exact second and nothing is timed; `meanwhile` is what happens elsewhere during its first wait."""

    def __init__(self, meanwhile: Callable[[], None] | None = None) -> None:
        self.now = 1000.0
        self.meanwhile = meanwhile

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.meanwhile is not None:
            self.meanwhile()
            self.meanwhile = None


def stopped(monkeypatch: pytest.MonkeyPatch, clock: StoppedClock) -> None:
    """The clock of the event's deadline, of the log's waits and of the budget's cooldown, where each is looked up."""
    for module in (relay.scope, relay.cloud_logging, relay.budget):
        monkeypatch.setattr(module, "time", clock)


def test_a_log_not_complete_yet_is_read_again_and_a_log_that_never_completes_is_shown_as_it_is(
    bitbucket, google, monkeypatch, reads
):
    monkeypatch.setenv("LOG_WAIT_SECONDS", "1.2")
    google.app.write_log("acme-ci", "b-1", {UNIT: ["collected 2 items"]}, last="")  # not complete yet
    the_rest = {UNIT: ["E   assert 1 == 2"]}
    stopped(monkeypatch, StoppedClock(lambda: google.app.write_log("acme-ci", "b-1", the_rest)))
    deliver(build("FAILURE", "b-1", steps=STEPS))
    assert reads() == 2  # not complete at first, complete after the first wait
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert report["details"].endswith("Last lines of step 1 (unit-tests):\ncollected 2 items\nE   assert 1 == 2")

    google.app.write_log("acme-ci", "b-2", {UNIT: ["still running"]}, last="")  # Cloud Build's last line never comes
    deliver(build("FAILURE", "b-2", steps=STEPS, commit="2" * 40))
    assert reads() == 2 + relay.cloud_logging.LOG_READS
    [report] = bitbucket.app.shown_reports("acme", "webapp", "2" * 40)
    assert "(the log may be incomplete: Cloud Build's last line was not in Cloud Logging yet):" in report["details"]


def test_a_build_whose_logging_is_none_says_so_and_reads_nothing(bitbucket, google, reads):
    deliver(build("FAILURE", "b-1", steps=STEPS, options={"logging": "NONE"}))
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert report["details"].endswith("No log excerpt: the build's logging is NONE")
    assert reads() == 0


def test_the_log_is_read_through_the_log_view_when_one_is_set(bitbucket, google, monkeypatch, pytest_output):
    view = "projects/acme-ci/locations/global/buckets/_Default/views/bitbucket-build-status"
    google.app.log_views.add(view)
    monkeypatch.setenv("LOG_VIEW", "bitbucket-build-status")
    google.app.write_log("acme-ci", "b-1", {UNIT: pytest_output})
    deliver(build("FAILURE", "b-1", steps=STEPS))
    assert bitbucket.app.shown_annotations("acme", "webapp", COMMIT)


def test_a_failing_builds_final_event_costs_four_calls_and_the_visibility_is_read_once_per_repository(
    bitbucket, google, pytest_output, reads
):
    """The final event: its status, the repository's visibility (once per repository per instance), the report,
    its annotations (a first run replaces no other build's report: no delete); the log read once."""
    for n in range(2):
        commit = f"{n + 1:040x}"
        google.app.write_log("acme-ci", f"b-{n}", {UNIT: pytest_output})
        for status in ("QUEUED", "WORKING"):
            deliver(build(status, f"b-{n}", steps=STEPS, commit=commit))
        before = len(bitbucket.app.calls)
        deliver(build("FAILURE", f"b-{n}", steps=STEPS, commit=commit))
        assert [c.method for c in bitbucket.app.calls[before:]] == (
            ["POST", "GET", "PUT", "POST"] if n == 0 else ["POST", "PUT", "POST"]
        )
    assert reads() == 2


@pytest.mark.parametrize("shown", [0, 1])
def test_log_excerpt_lines_is_how_many_last_lines_a_report_shows_and_the_annotations_come_whatever_it_is(
    bitbucket, google, monkeypatch, pytest_output, shown
):
    monkeypatch.setenv("LOG_EXCERPT_LINES", str(shown))
    google.app.write_log("acme-ci", "b-1", {UNIT: pytest_output})
    deliver(build("FAILURE", "b-1", steps=STEPS))

    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    if shown == 0:
        assert "Last lines of" not in report["details"]
        assert "No log excerpt" not in report["details"]
        assert not any(line in report["details"] for line in pytest_output if len(line) > 20)
    else:
        assert report["details"].endswith(f"\nLast lines of step 1 (unit-tests):\n{pytest_output[-1]}")
    [annotation] = bitbucket.app.shown_annotations("acme", "webapp", COMMIT)
    assert (annotation["path"], annotation["line"]) == ("service/tests/test_auth.py", 7)


def test_a_build_that_timed_out_has_a_complete_log_read_once(bitbucket, google, reads):
    """Cloud Build's last line of a build that timed out is TIMEOUT: the log is complete, not waited for."""
    steps = [STEPS[0], {**STEPS[1], "status": "TIMEOUT"}]
    google.app.write_log("acme-ci", "b-1", {UNIT: ["collected 2 items", "tests/test_slow.py ."]}, last="TIMEOUT")
    deliver(build("TIMEOUT", "b-1", steps=steps))

    assert reads() == 1
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert report["details"].endswith("\nLast lines of step 1 (unit-tests):\ncollected 2 items\ntests/test_slow.py .")
    assert "incomplete" not in report["details"]


@pytest.mark.parametrize("code", [401, 404])
def test_cloud_logging_answering_401_or_404_lands_the_report_without_lines_and_names_the_role_once(
    bitbucket, google, capsys, code
):
    """404: the log view LOG_VIEW names does not exist (or the project); 401: the function's token is refused."""
    google.app.logging_answer = code
    for n in range(2):
        deliver(build("FAILURE", f"b-{n}", steps=STEPS, commit=f"{n + 1:040x}"))

    warnings = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    [warning] = warnings  # once per instance
    assert f"Cloud Logging answered {code}" in warning["message"]
    assert "roles/logging.viewAccessor on the log view LOG_VIEW" in warning["message"]
    for n in range(2):
        [report] = bitbucket.app.shown_reports("acme", "webapp", f"{n + 1:040x}")
        said = f"No log excerpt: the function may not read the build's log (Cloud Logging answered {code})"
        assert said in report["details"]


@pytest.mark.parametrize(("deadline", "expected"), [(31, 1), (31.5, 2), (33, 2), (33.5, 3)])
def test_a_log_not_complete_is_read_again_only_while_more_than_the_writes_reserve_is_left_after_the_wait(
    bitbucket, google, monkeypatch, reads, deadline, expected
):
    """LOG_WAIT_SECONDS=3: read, wait 1 s, read, wait 2 s, read; a wait that would leave no more than the 30 s kept for
    the report's own writes (WRITES_RESERVE) of EVENT_DEADLINE_SECONDS is not waited, and the log not read again."""
    stopped(monkeypatch, StoppedClock())
    monkeypatch.setenv("LOG_WAIT_SECONDS", "3")
    monkeypatch.setenv("EVENT_DEADLINE_SECONDS", str(deadline))
    google.app.write_log("acme-ci", "b-1", {UNIT: ["still running"]}, last="")  # Cloud Build's last line never comes
    deliver(build("FAILURE", "b-1", steps=STEPS))

    assert reads() == expected
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert report["details"].endswith("(the log may be incomplete: Cloud Build's last line was not in Cloud Logging "
                                      "yet):\nstill running")  # fmt: skip


def test_a_public_repository_shows_no_log_line_when_the_budget_leaves_no_call_to_ask_its_visibility(
    bitbucket, google, pytest_output, reads
):
    """Events of one instance run at once: another event's answer may say the budget is nearly spent after this
    event's report was allowed. Its visibility is then not asked, and not known private: no line, no annotation."""
    bitbucket.app.public.add("acme/webapp")
    bitbucket.app.budget, bitbucket.app.near_limit_share = 1000, 0.001  # nearly spent from the first answer
    google.app.write_log("acme-ci", "b-1", {UNIT: pytest_output})
    deliver(build("WORKING", "b-1", steps=STEPS))
    reporter = relay.warm.warm_instance().reporter
    assert reporter.budget.nearly_spent(reporter.keyring.entry_for(relay.repository.Repository("acme", "webapp")))
    update = relay.translate.translate(build("FAILURE", "b-1", steps=STEPS), relay.config.Config())
    assert isinstance(update, relay.translate.Update)
    assert update.report is not None
    calls = len(bitbucket.app.calls)

    with relay.scope.event_scope(60, "acme-ci"):
        report = reporter.with_log(reporter.cloud, update.target.candidates[0], update.report)

    assert not any(line in report.details for line in pytest_output if len(line) > 20)
    assert report.annotations == ()
    assert "No log excerpt: the repository is not known to be private" in report.details
    assert len(bitbucket.app.calls) == calls  # its visibility not asked
    assert reads() == 0


@pytest.mark.parametrize("fault", ["403", "404", "500"])
def test_a_repository_whose_visibility_cannot_be_read_shows_no_log_line(bitbucket, google, pytest_output, fault):
    google.app.write_log("acme-ci", "b-1", {UNIT: pytest_output})
    for status in ("QUEUED", "WORKING"):
        deliver(build(status, "b-1", steps=STEPS))
    tries = relay.transport.HTTP_RETRIES + 1 if int(fault) in relay.transport.RETRY_STATUSES else 1
    bitbucket.app.fail_next("", *[fault] * tries)  # the status, then every try of the visibility read
    deliver(build("FAILURE", "b-1", steps=STEPS))

    assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", COMMIT)] == ["FAILED"]
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert not any(line in report["details"] for line in pytest_output if len(line) > 20)
    assert "No log excerpt: the repository is not known to be private (LOG_EXCERPTS=private)" in report["details"]
    assert bitbucket.app.shown_annotations("acme", "webapp", COMMIT) == []


def test_a_visibility_read_that_failed_is_asked_again_for_the_next_build(bitbucket, google, pytest_output):
    for n in range(2):
        google.app.write_log("acme-ci", f"b-{n}", {UNIT: pytest_output})
    bitbucket.app.fail_next(
        "", "", *["500"] * (relay.transport.HTTP_RETRIES + 1)
    )  # b-0's status read and write, its visibility
    deliver(build("FAILURE", "b-0", steps=STEPS, commit="1" * 40))
    deliver(build("FAILURE", "b-1", steps=STEPS, commit="2" * 40))

    [first] = bitbucket.app.shown_reports("acme", "webapp", "1" * 40)
    assert "No log excerpt: the repository is not known to be private" in first["details"]
    [second] = bitbucket.app.shown_reports("acme", "webapp", "2" * 40)
    assert second["details"].endswith(pytest_output[-1])


def test_a_private_repository_whose_visibility_the_budget_left_unasked_shows_its_lines_once_the_cooldown_ends(
    bitbucket, google, monkeypatch, pytest_output
):
    clock = StoppedClock()
    stopped(monkeypatch, clock)
    bitbucket.app.budget, bitbucket.app.near_limit_share = 1000, 0.001
    for n in range(2):
        google.app.write_log("acme-ci", f"b-{n}", {UNIT: pytest_output})
    deliver(build("WORKING", "b-0", steps=STEPS, commit="1" * 40))  # the budget is nearly spent
    reporter = relay.warm.warm_instance().reporter
    update = relay.translate.translate(build("FAILURE", "b-0", steps=STEPS, commit="1" * 40), relay.config.Config())
    assert isinstance(update, relay.translate.Update)
    assert update.report is not None
    with relay.scope.event_scope(60, "acme-ci"):
        unasked = reporter.with_log(reporter.cloud, update.target.candidates[0], update.report)
    assert "No log excerpt: the repository is not known to be private" in unasked.details

    clock.sleep(relay.config.DEFAULT_RATE_LIMIT_COOLDOWN_SECONDS + 1)
    bitbucket.app.near_limit_share = 0.8
    deliver(build("FAILURE", "b-1", steps=STEPS, commit="2" * 40))
    [report] = bitbucket.app.shown_reports("acme", "webapp", "2" * 40)
    assert report["details"].endswith(pytest_output[-1])


def test_a_log_of_lines_too_long_to_read_lands_the_status_and_report_without_them(bitbucket, google):
    huge = ["token " + "a." * 128_000] * 40  # 10 MB: Cloud Logging keeps entries of 256 KB
    google.app.write_log("acme-ci", "b-1", {UNIT: huge})
    lifecycle(build, "b-1", "FAILURE", steps=STEPS)

    assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", COMMIT)] == ["FAILED"]
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert "No log excerpt: the step's last lines are too long to read (over 8 MB)" in report["details"]


def test_a_step_without_an_id_is_numbered_alike_in_the_failed_step_and_its_lines(bitbucket, google):
    steps = [{"name": "gcr.io/cloud-builders/git", "status": "SUCCESS"},
             {"name": "python:3.12", "args": ["pytest"], "status": "FAILURE", "exitCode": 1}]  # fmt: skip
    google.app.write_log("acme-ci", "b-1", {"Step #1": ["E   assert 1 == 2", "1 failed"]})
    deliver(build("FAILURE", "b-1", steps=steps))

    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert "Failed step: step 1 (python:3.12): pytest, exit code 1" in report["details"]
    assert "Last lines of step 1:" in report["details"]


# --- what becomes of the annotations, in the function's log line ------------------------------------------------


def test_the_log_line_says_how_many_annotations_the_report_carries(bitbucket, google, capsys, pytest_output):
    tsc_steps = [{"id": "typecheck", "name": "node:22", "args": ["npx", "tsc"], "dir": "web", "status": "FAILURE"}]
    google.app.write_log("acme-ci", "b-1", {UNIT: pytest_output})
    google.app.write_log("acme-ci", "b-2", {'Step #0 - "typecheck"': (LOGS / "tsc.txt").read_text().splitlines()})
    deliver(build("FAILURE", "b-1", steps=STEPS))
    deliver(build("FAILURE", "b-2", steps=tsc_steps, commit="2" * 40))

    one, two = (line["message"] for line in log_lines(capsys.readouterr().out))
    assert one.endswith("; its Code Insights report written with 1 annotation")
    assert two.endswith("; its Code Insights report written with 2 annotations")
    assert len(bitbucket.app.shown_annotations("acme", "webapp", "2" * 40)) == 2


@pytest.mark.parametrize(
    ("answer", "severity", "said"),
    [
        (
            400,
            "WARNING",
            "Bitbucket Cloud refused its annotations: Bitbucket answered 400 to POST: Annotations refused",
        ),
        (429, "INFO", "its annotations skipped: the hourly budget of its credential is spent"),
    ],
)
def test_annotations_bitbucket_refuses_or_has_no_budget_for_leave_the_report_written_and_say_so(
    bitbucket, google, capsys, monkeypatch, pytest_output, answer, severity, said
):
    monkeypatch.setattr(bitbucket.app, "_annotate", lambda *args: error(answer, "Annotations refused"))
    google.app.write_log("acme-ci", "b-1", {UNIT: pytest_output})
    deliver(build("FAILURE", "b-1", steps=STEPS))  # acknowledged: no raise

    [line] = log_lines(capsys.readouterr().out)
    assert (line["severity"], line["report"]) == (severity, "written")
    assert line["message"].endswith(f"; its Code Insights report written; {said}")
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert report["result"] == "FAILED"


def test_annotations_of_an_attempt_that_failed_do_not_outlive_the_report_written_again(
    bitbucket, google, monkeypatch, pytest_output
):
    """Bitbucket keeps the annotations but answers 500, again and again: the event is redelivered. By then the log
    says more (Cloud Logging lags), and the report written again carries only the annotations of what it shows."""
    keeps = bitbucket.app._annotate
    failing = [True]

    def keeps_them_but_fails(*args: Any) -> Any:
        kept = keeps(*args)
        return error(500, "Something went wrong") if failing[0] else kept

    monkeypatch.setattr(bitbucket.app, "_annotate", keeps_them_but_fails)
    google.app.write_log("acme-ci", "b-1", {UNIT: pytest_output})
    with pytest.raises(relay.errors.TransientError):
        deliver(build("FAILURE", "b-1", steps=STEPS))
    [first] = bitbucket.app.shown_annotations("acme", "webapp", COMMIT)
    assert (first["path"], first["line"]) == ("service/tests/test_auth.py", 7)

    failing[0] = False
    google.app.log_entries.clear()
    later = [line.replace("test_auth.py:7:", "test_auth.py:8:") for line in pytest_output]
    google.app.write_log("acme-ci", "b-1", {UNIT: later})
    deliver(build("FAILURE", "b-1", steps=STEPS))  # the redelivery

    [annotation] = bitbucket.app.shown_annotations("acme", "webapp", COMMIT)
    assert (annotation["path"], annotation["line"]) == ("service/tests/test_auth.py", 8)
