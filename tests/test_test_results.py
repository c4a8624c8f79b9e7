"""Test results on Bitbucket: the JUnit files a build leaves in Cloud Storage (a folder its author names, or a
passing build's artifacts) read only from the deployment's buckets, parsed safely in every common dialect, and
shown as counts on the status (testResults on a server), in the report and as annotations; through the storage
emulator and both stand-ins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import main
from standins.builds import COMMIT, build
from tests.conftest import dc_build, deliver, log_lines

JUNIT = Path(__file__).resolve().parent / "data" / "junit"
BUCKET = "acme-test-reports"
AUTH_SUITE = """
import pytest


def login(user):
    return user.upper()


@pytest.mark.parametrize("n", range(213))
def test_many(n):
    assert n >= 0


def test_login():
    assert login("ada") == "Ada"


def test_logout():
    assert login("bob") == "Bob"
"""


def pytest_junit(tmp_path: Path, family: str = "xunit2", suite: str = AUTH_SUITE) -> bytes:
    """What pytest writes with --junitxml for a suite of 215 tests, 2 of them failing, in tests/test_auth.py."""
    (tmp_path / "tests").mkdir(exist_ok=True)
    (tmp_path / "tests" / "test_auth.py").write_text(suite)
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={tmp_path / 'junit.xml'}",
         "-o", f"junit_family={family}", "tests"], cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ran.returncode == 1, ran.stdout[-2000:]
    return (tmp_path / "junit.xml").read_bytes()


@pytest.fixture
def reports_bucket(monkeypatch, storage, bitbucket):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage.host)
    monkeypatch.setenv("TEST_REPORT_BUCKETS", f"{BUCKET} other-allowed")
    return storage


# --- parsing, pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["xunit2", "xunit1"])
def test_pytests_own_files_give_the_counts_and_each_failed_test_with_its_line(tmp_path, family):
    results = main.parse_junit(pytest_junit(tmp_path, family))
    assert (results.passed, results.failed, results.skipped) == (213, 2, 0)
    assert results.counts() == "2 of 215 tests failed"
    annotations = main.test_annotations(results, "")
    assert [(a.path, a.line) for a in annotations] == [("tests/test_auth.py", 15), ("tests/test_auth.py", 19)]
    assert annotations[0].message.startswith("tests.test_auth.test_login: AssertionError: assert 'ADA' == 'Ada'")


def test_each_dialect_is_counted_and_its_failures_placed_in_the_repository():
    surefire = main.parse_junit((JUNIT / "surefire-passing.xml").read_bytes())
    assert (surefire.passed, surefire.failed, surefire.skipped) == (11, 0, 1)  # a flaky test passed on its rerun
    assert surefire.counts() == "11 tests passed (1 skipped)"
    gotestsum = main.parse_junit((JUNIT / "gotestsum.xml").read_bytes())
    assert (gotestsum.passed, gotestsum.failed, gotestsum.skipped) == (2, 1, 1)
    [failure] = gotestsum.failures
    assert failure.name == "example.com/gosvc/pricing.TestPrice"
    jest = main.parse_junit((JUNIT / "jest-junit.xml").read_bytes())
    assert (jest.passed, jest.failed) == (0, 1)
    [annotation] = main.test_annotations(jest, "")
    assert (annotation.path, annotation.line) == ("web/src/cart.test.js", 3)  # the last place inside the repository


def test_several_files_add_up(tmp_path):
    both = main.parse_junit(pytest_junit(tmp_path)) + main.parse_junit((JUNIT / "surefire-passing.xml").read_bytes())
    assert both.counts() == "2 of 227 tests failed"


BOMB = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;"><!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<testsuite><testcase name="&lol4;"/></testsuite>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<testsuite><testcase name="&x;"/></testsuite>"""


@pytest.mark.parametrize(
    "data",
    [BOMB, EXTERNAL, b"<testsuite><testcase name='a'>" * 3 + b"", b"\xff\xfe<testsuite/>", b"<html><body/></html>",
     b"not xml at all"],
    ids=["entity bomb", "external entity", "not well-formed", "invalid UTF-8", "not JUnit", "not XML"],
)  # fmt: skip
def test_a_hostile_or_foreign_file_is_refused_without_expanding_anything(data):
    with pytest.raises(ValueError):  # noqa: PT011 (what it says is the file's fault, named in the log)
        main.parse_junit(data)


def test_ten_thousand_levels_deep_is_parsed_or_refused_without_harm():
    deep = b"<testsuite>" + b"<x>" * 10_000 + b"</x>" * 10_000 + b"<testcase name='t'/></testsuite>"
    assert main.parse_junit(deep).passed == 1


# --- through Cloud Storage (the emulator) and both sites ----------------------------------------------------


def test_a_failing_pytest_build_shows_how_many_tests_failed_and_annotates_each_failed_test(
    reports_bucket, bitbucket, tmp_path
):
    reports_bucket.put(BUCKET, "failing/junit.xml", pytest_junit(tmp_path))
    subs = {"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/failing/", "COMMIT_SHA": COMMIT, "TRIGGER_NAME": "webapp-pr"}
    deliver(build("FAILURE", "b-1", substitutions=subs))

    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 2 of 215 tests failed"
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert {"title": "Tests", "type": "TEXT", "value": "2 of 215 tests failed"} in report["data"]
    assert "Failed test: tests.test_auth.test_login: AssertionError: assert 'ADA' == 'Ada'" in report["details"]
    annotations = bitbucket.app.shown_annotations("acme", "webapp", COMMIT)
    assert [(a["path"], a["line"]) for a in annotations] == [("tests/test_auth.py", 15), ("tests/test_auth.py", 19)]
    assert "test_login" in annotations[0]["summary"]


def test_a_passing_maven_builds_artifacts_put_test_results_on_its_data_center_status(reports_bucket, both):
    reports_bucket.put(BUCKET, "target/surefire-reports/TEST-com.acme.payments.LedgerTest.xml",
                       (JUNIT / "surefire-passing.xml").read_bytes())  # fmt: skip
    manifest = [{"location": f"gs://{BUCKET}/target/surefire-reports/TEST-com.acme.payments.LedgerTest.xml#17",
                 "file_hash": []}, {"location": f"gs://{BUCKET}/target/app.jar#18", "file_hash": []}]  # fmt: skip
    reports_bucket.put(BUCKET, "artifacts-b-1.json", "\n".join(json.dumps(m) for m in manifest).encode())
    results = {"artifactManifest": f"gs://{BUCKET}/artifacts-b-1.json", "numArtifacts": 2}
    deliver(dc_build("SUCCESS", both, "b-1", results=results))

    [status] = both.shown()
    assert status["testResults"] == {"successful": 11, "failed": 0, "skipped": 1}
    assert status["description"] == "Succeeded in 3m 12s: 11 tests passed (1 skipped)"


def test_a_bucket_outside_test_report_buckets_is_never_read(reports_bucket, bitbucket, capsys):
    reports_bucket.put("someone-elses-bucket", "b-1/junit.xml", (JUNIT / "gotestsum.xml").read_bytes())
    downloads = reports_bucket.downloads
    subs = {"_BITBUCKET_TEST_REPORTS": "gs://someone-elses-bucket/b-1/", "COMMIT_SHA": COMMIT}
    for n in range(2):
        deliver(build("FAILURE", f"b-{n}", substitutions=subs))
    assert reports_bucket.downloads == downloads
    warnings = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    assert [w["message"] for w in warnings] == [
        "A build names test reports in gs://someone-elses-bucket, which is not one of TEST_REPORT_BUCKETS: nothing "
        "is read from it"
    ]  # once per instance
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert "tests" not in status["description"]


def test_a_manifest_line_pointing_at_another_bucket_is_not_followed(reports_bucket, bitbucket, tmp_path):
    reports_bucket.put("someone-elses-bucket", "x/junit.xml", pytest_junit(tmp_path))
    reports_bucket.put(BUCKET, "artifacts-b-1.json",
                       json.dumps({"location": "gs://someone-elses-bucket/x/junit.xml#1"}).encode())  # fmt: skip
    downloads = reports_bucket.downloads
    deliver(build("SUCCESS", "b-1", results={"artifactManifest": f"gs://{BUCKET}/artifacts-b-1.json"}))
    assert reports_bucket.downloads == downloads + 1  # the manifest alone
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Succeeded in 3m 12s"


def test_an_entity_bomb_costs_nothing_and_the_status_still_lands(reports_bucket, bitbucket, capsys):
    reports_bucket.put(BUCKET, "bomb/bomb.xml", BOMB)
    reports_bucket.put(BUCKET, "bomb/go.xml", (JUNIT / "gotestsum.xml").read_bytes())
    deliver(build("FAILURE", "b-1", substitutions={"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/bomb/",
                                                   "COMMIT_SHA": COMMIT}))  # fmt: skip
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 1 of 4 tests failed (partial)"
    out = capsys.readouterr().out
    assert "Skipped the test report gs://acme-test-reports/bomb/bomb.xml: not a JUnit XML file" in out
    assert "lol" not in out


def test_a_file_past_the_bound_is_not_read_past_it_and_the_counts_say_they_are_partial(
    reports_bucket, bitbucket, monkeypatch, tmp_path
):
    monkeypatch.setattr(main, "TEST_FILE_BYTES_MAX", 64 * 1024)
    huge = b"<testsuite>" + b"<testcase name='t'/>" * 20_000 + b"</testsuite>"  # 400 KB: past 64 KB
    reports_bucket.put(BUCKET, "huge/huge.xml", huge)
    reports_bucket.put(BUCKET, "huge/junit.xml", pytest_junit(tmp_path))
    deliver(build("FAILURE", "b-1", substitutions={"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/huge/",
                                                   "COMMIT_SHA": COMMIT}))  # fmt: skip
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 2 of 215 tests failed (partial)"


def test_test_report_buckets_must_be_bucket_names():
    with pytest.raises(main.ConfigurationError, match="TEST_REPORT_BUCKETS must be bucket names"):
        main.Config.from_env({"TEST_REPORT_BUCKETS": "gs://acme-reports"})


def test_a_report_carries_at_most_a_hundred_annotations_however_many_tests_failed():
    """Bitbucket Cloud takes 100 annotations a request: with LOG_EXCERPTS=off nothing else would cap them."""
    failures = tuple(main.FailedTest(f"t{n}", "boom", f"tests/test_many.py:{n + 1}: AssertionError", "", None)
                     for n in range(150))  # fmt: skip
    update = main.translate(build("FAILURE"), main.Config())
    assert isinstance(update, main.Update)
    tested = main.with_tests(update, main.TestResults(passed=10, failed=150, failures=failures))
    assert tested.report is not None
    assert len(tested.report.annotations) == main.ANNOTATIONS_MAX
    assert tested.status.description == "Failed after 3m 12s: 150 of 160 tests failed"


def test_a_final_message_delivered_again_reads_the_test_files_once(reports_bucket, bitbucket, tmp_path):
    reports_bucket.put(BUCKET, "again/junit.xml", pytest_junit(tmp_path))
    subs = {"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/again/", "COMMIT_SHA": COMMIT}
    downloads = reports_bucket.downloads
    for _ in range(3):
        deliver(build("FAILURE", "b-1", substitutions=subs))
    assert reports_bucket.downloads == downloads + 1
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 2 of 215 tests failed"
