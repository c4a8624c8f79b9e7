"""Test results on Bitbucket: the JUnit files a build leaves in Cloud Storage (a folder its author names, or a
passing build's artifacts) read only from the deployment's buckets, parsed safely in every common dialect, and
shown as counts on the status (testResults on a server), in the report and as annotations; through the storage
emulator and both stand-ins."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

import main
import relay.annotations
import relay.cloud_storage
import relay.config
import relay.errors
import relay.junit
import relay.report
import relay.scope
import relay.translate
import relay.warm
from standins import remember_secret
from standins.builds import COMMIT, Context, background_event, build
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
    results = relay.junit.parse_junit(pytest_junit(tmp_path, family))
    assert (results.passed, results.failed, results.skipped) == (213, 2, 0)
    assert results.counts() == "2 of 215 tests failed"
    annotations = relay.junit.test_annotations(results)
    assert [(a.path, a.line) for a in annotations] == [("tests/test_auth.py", 15), ("tests/test_auth.py", 19)]
    assert annotations[0].message.startswith("tests.test_auth.test_login: AssertionError: assert 'ADA' == 'Ada'")


def test_each_dialect_is_counted_and_its_failures_placed_in_the_repository():
    surefire = relay.junit.parse_junit((JUNIT / "surefire-passing.xml").read_bytes())
    assert (surefire.passed, surefire.failed, surefire.skipped) == (11, 0, 1)  # a flaky test passed on its rerun
    assert surefire.counts() == "11 tests passed (1 skipped)"
    gotestsum = relay.junit.parse_junit((JUNIT / "gotestsum.xml").read_bytes())
    assert (gotestsum.passed, gotestsum.failed, gotestsum.skipped) == (2, 1, 1)
    [failure] = gotestsum.failures
    assert failure.name == "example.com/gosvc/pricing.TestPrice"
    jest = relay.junit.parse_junit((JUNIT / "jest-junit.xml").read_bytes())
    assert (jest.passed, jest.failed) == (0, 1)
    [annotation] = relay.junit.test_annotations(jest)
    assert (annotation.path, annotation.line) == ("web/src/cart.test.js", 3)  # the last place inside the repository


def test_several_files_add_up(tmp_path):
    both = relay.junit.parse_junit(pytest_junit(tmp_path)) + relay.junit.parse_junit(
        (JUNIT / "surefire-passing.xml").read_bytes()
    )
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
        relay.junit.parse_junit(data)


def test_a_file_nested_deeper_than_a_thousand_levels_is_refused_and_one_within_is_read():
    """Each open element is held while the file is read: nesting is what bounds them."""
    deep = b"<testsuite>" + b"<x>" * 10_000 + b"</x>" * 10_000 + b"<testcase name='t'/></testsuite>"
    with pytest.raises(ValueError, match="nests elements more than 1000 deep"):
        relay.junit.parse_junit(deep)
    within = b"<testsuite>" + b"<x>" * 998 + b"</x>" * 998 + b"<testcase name='t'/></testsuite>"
    assert relay.junit.parse_junit(within).passed == 1


# --- through Cloud Storage (the emulator) and both sites ----------------------------------------------------


def test_a_failing_pytest_build_shows_how_many_tests_failed_and_annotates_each_failed_test(
    reports_bucket, bitbucket, tmp_path
):
    reports_bucket.put(BUCKET, "failing/b-1/junit.xml", pytest_junit(tmp_path))
    subs = {"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/failing/b-1/", "COMMIT_SHA": COMMIT, "TRIGGER_NAME": "webapp-pr"}
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
    ledger = "target/surefire-reports/TEST-com.acme.payments.LedgerTest.xml"
    generation = reports_bucket.put(BUCKET, ledger, (JUNIT / "surefire-passing.xml").read_bytes())
    manifest = [{"location": f"gs://{BUCKET}/{ledger}#{generation}", "file_hash": []},
                {"location": f"gs://{BUCKET}/target/app.jar#18", "file_hash": []}]  # fmt: skip
    reports_bucket.put(BUCKET, "artifacts-b-1.json", "\n".join(json.dumps(m) for m in manifest).encode())
    results = {"artifactManifest": f"gs://{BUCKET}/artifacts-b-1.json", "numArtifacts": 2}
    deliver(dc_build("SUCCESS", both, "b-1", results=results))

    [status] = both.shown()
    assert status["testResults"] == {"successful": 11, "failed": 0, "skipped": 1}
    assert status["description"] == "Succeeded in 3m 12s: 11 tests passed (1 skipped)"


def test_a_bucket_outside_test_report_buckets_is_never_read(reports_bucket, bitbucket, capsys):
    reports_bucket.put("someone-elses-bucket", "b-1/junit.xml", (JUNIT / "gotestsum.xml").read_bytes())
    downloads = reports_bucket.downloads
    for n in range(2):
        subs = {"_BITBUCKET_TEST_REPORTS": f"gs://someone-elses-bucket/b-{n}/", "COMMIT_SHA": COMMIT}
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
    reports_bucket.put(BUCKET, "bomb/b-1/bomb.xml", BOMB)
    reports_bucket.put(BUCKET, "bomb/b-1/go.xml", (JUNIT / "gotestsum.xml").read_bytes())
    deliver(build("FAILURE", "b-1", substitutions={"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/bomb/b-1/",
                                                   "COMMIT_SHA": COMMIT}))  # fmt: skip
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 1 of 4 tests failed (partial)"
    out = capsys.readouterr().out
    assert "Skipped the test report gs://acme-test-reports/bomb/b-1/bomb.xml: not a JUnit XML file" in out
    assert "lol" not in out


def test_a_test_files_name_reaches_the_log_without_its_query(reports_bucket, bitbucket, capsys):
    secret = "Tb8uQ2wXr5ZkLm9PvN3sY7cJ"
    remember_secret(secret)
    reports_bucket.put(BUCKET, f"named/b-1/bad.xml?access_token={secret}#x.xml", b"not xml")
    deliver(build("FAILURE", "b-1", substitutions={"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/named/b-1/",
                                                   "COMMIT_SHA": COMMIT}))  # fmt: skip
    out = capsys.readouterr().out
    assert "Skipped the test report gs://acme-test-reports/named/b-1/bad.xml: not a JUnit XML file" in out
    assert secret not in out


def test_a_file_past_the_bound_is_not_read_past_it_and_the_counts_say_they_are_partial(
    reports_bucket, bitbucket, monkeypatch, tmp_path
):
    monkeypatch.setattr(relay.junit, "TEST_FILE_BYTES_MAX", 64 * 1024)
    huge = b"<testsuite>" + b"<testcase name='t'/>" * 20_000 + b"</testsuite>"  # 400 KB: past 64 KB
    reports_bucket.put(BUCKET, "huge/b-1/huge.xml", huge)
    reports_bucket.put(BUCKET, "huge/b-1/junit.xml", pytest_junit(tmp_path))
    deliver(build("FAILURE", "b-1", substitutions={"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/huge/b-1/",
                                                   "COMMIT_SHA": COMMIT}))  # fmt: skip
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 2 of 215 tests failed (partial)"


def test_test_report_buckets_must_be_bucket_names():
    with pytest.raises(relay.errors.ConfigurationError, match="TEST_REPORT_BUCKETS must be bucket names"):
        relay.config.Config.from_env({"TEST_REPORT_BUCKETS": "gs://acme-reports"})


def test_a_report_carries_at_most_a_hundred_annotations_however_many_tests_failed():
    """Bitbucket Cloud takes 100 annotations a request: with LOG_EXCERPTS=off nothing else would cap them."""
    failures = relay.junit.kept_failures(
        relay.junit.FailedTest(f"t{n}", "boom", "tests/test_many.py", n + 1) for n in range(150)
    )
    update = relay.translate.translate(build("FAILURE"), relay.config.Config())
    assert isinstance(update, relay.translate.Update)
    tested = relay.junit.with_tests(update, relay.junit.TestResults(passed=10, failed=150, failures=failures))
    assert tested.report is not None
    assert len(tested.report.annotations) == relay.annotations.ANNOTATIONS_MAX
    assert tested.status.description == "Failed after 3m 12s: 150 of 160 tests failed"


def test_a_final_message_delivered_again_reads_the_test_files_once(reports_bucket, bitbucket, tmp_path):
    reports_bucket.put(BUCKET, "again/b-1/junit.xml", pytest_junit(tmp_path))
    subs = {"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/again/b-1/", "COMMIT_SHA": COMMIT}
    downloads = reports_bucket.downloads
    for _ in range(3):
        deliver(build("FAILURE", "b-1", substitutions=subs))
    assert reports_bucket.downloads == downloads + 1
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 2 of 215 tests failed"


# --- what a build's test files cost: bounded, and never the status ------------------------------------------------


def junit(*cases: str, suite: str = "tests.test_app") -> bytes:
    return f'<testsuite name="{suite}">{"".join(cases)}</testsuite>'.encode()


def failing_case(name: str, text: str = "", message: str = "boom", **attributes: str) -> str:
    shown = "".join(f' {k}="{v}"' for k, v in attributes.items())
    failure = f'<failure message="{message}">{text}</failure>'
    return f'<testcase classname="tests.test_app" name="{name}"{shown}>{failure}</testcase>'


def delivered_with_tests(reports_bucket, folder: str, files: dict[str, bytes], status: str = "FAILURE",
                         build_id: str = "b-1", commit: str = COMMIT) -> None:  # fmt: skip
    """A build whose files are put under gs://BUCKET/FOLDER/BUILD_ID/, named by _BITBUCKET_TEST_REPORTS, delivered."""
    for name, data in files.items():
        reports_bucket.put(BUCKET, f"{folder}/{build_id}/{name}", data)
    subs = {"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/{folder}/{build_id}/", "COMMIT_SHA": commit}
    deliver(build(status, build_id, substitutions=subs))


def test_a_5000_digit_line_number_in_a_failure_text_leaves_the_status_posted_and_logs_no_error(
    reports_bucket, bitbucket, capsys
):
    """Python refuses to make an int of more than 4,300 digits: a line number is read only up to 9."""
    text = "Traceback:\n  src/app.py:" + "7" * 5000 + ": in handler\nAssertionError"
    delivered_with_tests(reports_bucket, "digits", {"junit.xml": junit(failing_case("test_digits", text))})
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 1 of 1 tests failed"
    assert all(line["severity"] != "ERROR" for line in log_lines(capsys.readouterr().out))


def test_a_line_attribute_that_is_not_a_plain_number_costs_only_that_tests_line():
    """'²' is a digit to str.isdigit, not to int(): the file is still read, that test annotated on its file."""
    data = junit(failing_case("test_a", file="tests/test_app.py", line="²"), '<testcase name="test_b"/>',
                 failing_case("test_c", file="tests/test_app.py", line="9" * 5000))  # fmt: skip
    results = relay.junit.parse_junit(data)
    assert (results.passed, results.failed) == (1, 2)
    assert [(a.path, a.line) for a in relay.junit.test_annotations(results)] == [("tests/test_app.py", None)] * 2


def test_an_unexpected_error_in_reading_test_results_leaves_the_status_posted_and_a_warning_naming_it(
    reports_bucket, bitbucket, monkeypatch, capsys
):
    """The docs promise test results never cost the status: a bug there is a WARNING naming its type and place
    (never its message, which may quote a file), not an ERROR and a redelivery."""

    def broken(data, directory="", secrets=()):
        raise TypeError("a message that may quote the file")

    monkeypatch.setattr(relay.junit, "parse_junit", broken)
    delivered_with_tests(reports_bucket, "broken", {"junit.xml": junit(failing_case("test_a"))})
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s"
    lines = log_lines(capsys.readouterr().out)
    [warning] = [line for line in lines if line["severity"] == "WARNING"]
    assert warning["message"].startswith("Test results left out: unexpected TypeError (")
    assert "quote" not in warning["message"]
    assert all(line["severity"] != "ERROR" for line in lines)


def many_failures(count: int, text_size: int) -> bytes:
    """`count` failed tests, each at its own place, each with a failure text of `text_size` characters."""
    return junit(*(failing_case(f"test_{n}", "x" * text_size + f"\ntests/test_app.py:{n + 1}: AssertionError")
                   for n in range(count)))  # fmt: skip


def test_what_is_kept_of_a_builds_test_files_is_what_its_report_shows():
    """Counts, the first five failed tests and one failed test per place up to the annotations' limit: never
    every failure's text (a build's 20 MB of files kept in full, per build, exhausted an instance)."""
    results = relay.junit.parse_junit(many_failures(300, 4000), "", ())
    assert (results.failed, len(results.failures)) == (300, relay.annotations.ANNOTATIONS_MAX)
    kept = sum(len(t.name) + len(t.message) + len(t.path or "") for t in results.failures)
    assert kept < relay.annotations.ANNOTATIONS_MAX * (
        2 * relay.report.FIELD_MAX + 100
    )  # 60 KB at most, of 1.2 MB of failure texts
    both = results + results  # two files: still one failed test per place, the first five in order
    assert (both.failed, len(both.failures)) == (600, relay.annotations.ANNOTATIONS_MAX)
    assert [t.name for t in both.failures[:5]] == [f"tests.test_app.test_{n}" for n in range(5)]


def traced_peak(function, *args):
    """The most memory Python had allocated, over what it held before, while `function` ran (counted by
    tracemalloc: every allocation, so the same on every run)."""
    tracemalloc.start()
    with contextlib.suppress(ValueError):
        function(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def filled(head: bytes, unit: Callable[[int], bytes], tail: bytes, size: int = 512 * 1024) -> bytes:
    count = (size - len(head) - len(tail)) // len(unit(0))
    return head + b"".join(unit(n) for n in range(count)) + tail


HOSTILE_FILES = {
    "tiny failing tests": lambda: filled(
        b"<testsuite>", lambda n: b'<testcase name="t"><failure/></testcase>', b"</testsuite>"
    ),
    "elements in a test case": lambda: filled(b"<testsuite><testcase>", lambda n: b"<p/>", b"</testcase></testsuite>"),
    "elements in a suite": lambda: filled(b"<testsuite>", lambda n: b"<p/>", b"</testsuite>"),
    "distinct element names": lambda: filled(b"<testsuite>", lambda n: b"<a%07d/>" % n, b"</testsuite>"),
    "distinct attribute names": lambda: filled(b"<testsuite>", lambda n: b'<testcase b%07d=""/>' % n, b"</testsuite>"),
    "distinct namespaces": lambda: filled(b"<testsuite>", lambda n: b'<t xmlns:p%07d="u"/>' % n, b"</testsuite>"),
    "attributes of one tag": lambda: filled(b"<testsuite><testcase", lambda n: b' a%07d=""' % n, b"/></testsuite>"),
    "nesting": lambda: filled(b"<testsuite>", lambda n: b"<x>", b"") + b"</testsuite>",
}


@pytest.mark.parametrize("shape", HOSTILE_FILES)
def test_a_file_costs_at_most_a_small_multiple_of_its_size_whatever_its_shape(shape, monkeypatch):
    """A file of any shape is read, or refused as not JUnit, holding at most 4 times its size and what the parser
    makes of one read (of 3-byte elements, at most 128 times the read): each element is dropped as it ends, and
    names, attributes and nesting are bounded (the whole tree, before, held 9 to 90 times the file's size)."""
    read = 16 * 1024
    monkeypatch.setattr(relay.junit, "JUNIT_CHUNK", read, raising=False)
    data = HOSTILE_FILES[shape]()
    assert traced_peak(relay.junit.parse_junit, data) < 4 * len(data) + 128 * read


def test_a_5_mb_failure_text_is_searched_for_places_only_at_its_start_and_end():
    """A place is searched in the first and last 16 KB of a failure's text, so a 5 MB text costs no more to
    search than 32 KB (the pattern on the whole of it, before, took seconds per file)."""
    middle = "a." * 1_250_000 + "\ntests/test_app.py:7: in the middle\n" + "b-" * 1_250_000
    text = "tests/test_app.py:3: at the start\n" + middle + "\ntests/test_app.py:9: AssertionError"
    assert relay.junit.failure_place(text, "") == ("tests/test_app.py", 9)
    assert relay.junit.failure_place(text[: -len("\ntests/test_app.py:9: AssertionError")], "") == (
        "tests/test_app.py",
        3,
    )


# --- no credential leaves in a test's name or message ---------------------------------------------------------------

OWN_TOKEN = "I1LKiusLrNeY7IF4IRZVET6QbYnAqpcK"  # the function's own credential in the tests below
BEARER = "_alydG-AyyF_c6wRWI0IuomsiTCtudol"  # a credential shaped as one, not the function's


def test_the_functions_own_credential_and_credential_shapes_are_masked_in_test_names_and_messages(
    reports_bucket, bitbucket, monkeypatch
):
    """Test names and messages are posted to Bitbucket, public repositories included: the function's own
    credentials and anything shaped like one are masked in them, and in the line of output shown for gotestsum."""
    remember_secret(OWN_TOKEN, BEARER)
    bitbucket.app.accept_token(OWN_TOKEN)
    bitbucket.app.public.add("acme/webapp")
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": OWN_TOKEN}))
    data = junit(
        failing_case(f"test_login[{OWN_TOKEN}]", "tests/test_app.py:3: AssertionError",
                     message=f"expected token {OWN_TOKEN}"),
        failing_case("test_api", "tests/test_app.py:8: Error", message=f"401 for Authorization: Bearer {BEARER}"),
        failing_case("test_go", f"=== RUN   test_go\n    app_test.go:4: sent {OWN_TOKEN}\n", message="Failed"),
    )  # fmt: skip
    delivered_with_tests(reports_bucket, "masked", {"junit.xml": data})
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    annotations = bitbucket.app.shown_annotations("acme", "webapp", COMMIT)
    sent = json.dumps([report, annotations])
    assert OWN_TOKEN not in sent
    assert BEARER not in sent
    assert "Failed test: tests.test_app.test_login[[masked]]: expected token [masked]" in report["details"]
    assert "Failed test: tests.test_app.test_go: app_test.go:4: sent [masked]" in report["details"]
    assert len(annotations) == 3


# --- a build reads what is its own, and only its own ------------------------------------------------------------


def test_a_later_build_never_shows_an_earlier_builds_counts(reports_bucket, bitbucket):
    """Two builds naming one folder (it holds both ids): the second reads it again, never the first's counts."""
    folder = f"gs://{BUCKET}/shared/b-1/b-2/"
    reports_bucket.put(BUCKET, "shared/b-1/b-2/junit.xml", junit(failing_case("test_a"), '<testcase name="test_b"/>'))
    deliver(build("FAILURE", "b-1", substitutions={"_BITBUCKET_TEST_REPORTS": folder, "COMMIT_SHA": COMMIT}))
    reports_bucket.put(BUCKET, "shared/b-1/b-2/junit.xml", junit('<testcase name="test_a"/>', '<testcase name="b"/>'))
    other = "2" * 40
    deliver(build("SUCCESS", "b-2", substitutions={"_BITBUCKET_TEST_REPORTS": folder, "COMMIT_SHA": other}))
    [first] = bitbucket.app.shown("acme", "webapp", COMMIT)
    [second] = bitbucket.app.shown("acme", "webapp", other)
    assert first["description"] == "Failed after 3m 12s: 1 of 2 tests failed"
    assert second["description"] == "Succeeded in 3m 12s: 2 tests passed"


def test_a_build_naming_another_builds_folder_reads_nothing_and_says_why(reports_bucket, bitbucket, capsys):
    reports_bucket.put(BUCKET, "team-b/b-9/junit.xml", junit(failing_case("test_secret_feature", "team B's text")))
    downloads = reports_bucket.downloads
    subs = {"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/team-b/b-9/", "COMMIT_SHA": COMMIT}
    deliver(build("FAILURE", "b-1", substitutions=subs))
    assert reports_bucket.downloads == downloads
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s"
    [warning] = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    assert warning["message"] == (
        "Test results of this build left out: _BITBUCKET_TEST_REPORTS must name a folder of the build's own, whose "
        "path holds its id (gs://BUCKET/PREFIX/$BUILD_ID/); nothing is read from it"
    )


def test_a_folder_named_by_the_builds_id_alone_is_that_folder(reports_bucket, bitbucket):
    """gs://BUCKET/PREFIX/$BUILD_ID without its slash is the folder, not every object whose name starts so."""
    reports_bucket.put(BUCKET, "bare/b-1/junit.xml", junit('<testcase name="test_a"/>'))
    reports_bucket.put(BUCKET, "bare/b-1-forged/junit.xml", junit(failing_case("test_forged")))
    deliver(build("SUCCESS", "b-1", substitutions={"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/bare/b-1",
                                                   "COMMIT_SHA": COMMIT}))  # fmt: skip
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Succeeded in 3m 12s: 1 tests passed"


def test_a_manifest_other_than_the_one_cloud_build_wrote_for_the_build_is_not_read(reports_bucket, bitbucket):
    reports_bucket.put(BUCKET, "other/TEST-x.xml", junit(failing_case("test_x")))
    reports_bucket.put(BUCKET, "other/artifacts-b-9.json",
                       json.dumps({"location": f"gs://{BUCKET}/other/TEST-x.xml#5"}).encode())  # fmt: skip
    downloads = reports_bucket.downloads
    deliver(build("SUCCESS", "b-1", results={"artifactManifest": f"gs://{BUCKET}/other/artifacts-b-9.json"}))
    assert reports_bucket.downloads == downloads
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Succeeded in 3m 12s"


def test_a_manifest_line_is_read_only_beside_the_manifest_and_at_the_generation_it_names(reports_bucket, bitbucket):
    """Cloud Build lists each object it uploaded into the manifest's folder, with its generation."""
    generation = reports_bucket.put(BUCKET, "gen/b-1/TEST-a.xml", junit('<testcase name="test_a"/>'))
    reports_bucket.put(BUCKET, "gen/b-1/TEST-live.xml", junit(failing_case("test_live")))
    elsewhere = reports_bucket.put(BUCKET, "elsewhere/TEST-x.xml", junit(failing_case("test_elsewhere")))
    lines = [f"gs://{BUCKET}/gen/b-1/TEST-a.xml#{generation}", f"gs://{BUCKET}/gen/b-1/TEST-live.xml",
             f"gs://{BUCKET}/elsewhere/TEST-x.xml#{elsewhere}"]  # fmt: skip
    reports_bucket.put(
        BUCKET, "gen/b-1/artifacts-b-1.json", "\n".join(json.dumps({"location": x}) for x in lines).encode()
    )
    downloads = reports_bucket.downloads
    deliver(build("SUCCESS", "b-1", results={"artifactManifest": f"gs://{BUCKET}/gen/b-1/artifacts-b-1.json"}))
    assert reports_bucket.downloads == downloads + 2  # the manifest, and the one line it may follow
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Succeeded in 3m 12s: 1 tests passed"


def team_build(project: str, build_id: str, folder: str) -> dict:
    b = build("FAILURE", build_id, repo="acme/a-web", substitutions={"_BITBUCKET_TEST_REPORTS": folder,
                                                                     "COMMIT_SHA": COMMIT})  # fmt: skip
    b["projectId"] = project
    return b


def delivered_in(b: dict, project: str) -> None:
    context = Context()
    context.resource = {"service": "pubsub.googleapis.com", "name": f"projects/{project}/topics/cloud-builds"}
    main.build_status(background_event(b), context)


@pytest.fixture
def two_teams(reports_bucket, bitbucket, monkeypatch):
    """Team A's builds of acme/a-web with team A's credential, in a deployment serving team A and team B."""
    bitbucket.app.accept_token(OWN_TOKEN, {"acme/a-web"})
    remember_secret(OWN_TOKEN)
    document = [{"token": OWN_TOKEN, "projects": ["team-a"]}]
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document))
    monkeypatch.setenv("BUILD_PROJECTS", "team-a team-b")
    reports_bucket.put("acme-b-reports", "b-7/junit.xml", junit(failing_case("test_b", "team B's own text")))
    reports_bucket.put("acme-test-reports", "team-b/b-7/junit.xml", junit(failing_case("test_b", "team B's text")))
    return reports_bucket


def test_a_teams_build_reads_nothing_from_a_bucket_another_project_is_given(two_teams, bitbucket, monkeypatch):
    monkeypatch.setenv("TEST_REPORT_BUCKETS", "team-a=acme-a-reports team-b=acme-b-reports")
    downloads = two_teams.downloads
    delivered_in(team_build("team-a", "b-7", "gs://acme-b-reports/b-7/"), "team-a")  # team B's build id, even
    assert two_teams.downloads == downloads
    [status] = bitbucket.app.shown("acme", "a-web", COMMIT)
    assert status["description"] == "Failed after 3m 12s"


def test_a_teams_build_naming_another_teams_prefix_of_a_shared_bucket_reads_nothing(two_teams, bitbucket, monkeypatch):
    monkeypatch.setenv("TEST_REPORT_BUCKETS", "team-a=acme-test-reports,team-b=acme-test-reports")
    downloads = two_teams.downloads
    delivered_in(team_build("team-a", "a-3", "gs://acme-test-reports/team-b/b-7/"), "team-a")
    assert two_teams.downloads == downloads
    [status] = bitbucket.app.shown("acme", "a-web", COMMIT)
    assert status["description"] == "Failed after 3m 12s"


@pytest.mark.parametrize(
    ("buckets", "projects", "error"),
    [
        ("acme-test-reports", "team-a team-b", "must name each bucket's project (PROJECT=bucket) when BUILD_PROJECTS"),
        ("team-c=acme-c-reports", "team-a team-b", "names project 'team-c', which is not in BUILD_PROJECTS"),
        ("team-a=gs://acme-a-reports", "", "must be bucket names, or PROJECT=bucket"),
        ("Team_A=acme-a-reports", "", "must be bucket names, or PROJECT=bucket"),
    ],
)
def test_test_report_buckets_give_each_bucket_its_project_when_several_are_served(buckets, projects, error):
    with pytest.raises(relay.errors.ConfigurationError, match=re.escape(error)):
        relay.config.Config.from_env({"TEST_REPORT_BUCKETS": buckets, "BUILD_PROJECTS": projects})


def test_test_report_buckets_of_one_project_may_be_plain_names():
    env = {"TEST_REPORT_BUCKETS": "acme-reports, team-a=acme-a", "BUILD_PROJECTS": "team-a"}
    assert relay.config.Config.from_env(env).test_report_buckets == {("", "acme-reports"), ("team-a", "acme-a")}


# --- smaller ones ------------------------------------------------------------------------------------------------


def test_the_buckets_warned_about_are_remembered_within_a_bound(reports_bucket, bitbucket, monkeypatch, capsys):
    """Each bucket outside TEST_REPORT_BUCKETS is warned about once while remembered; a build can name a new one
    each time, so what is remembered is bounded."""
    monkeypatch.setattr(relay.cloud_storage.TestReports, "WARNED_MAX", 3, raising=False)
    for n in range(5):
        subs = {"_BITBUCKET_TEST_REPORTS": f"gs://not-allowed-{n}/b-{n}/", "COMMIT_SHA": COMMIT}
        deliver(build("FAILURE", f"b-{n}", substitutions=subs))
    assert relay.warm.instance is not None
    assert relay.warm.instance.tests is not None
    assert len(relay.warm.instance.tests.warned) <= 3
    warnings = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    assert len(warnings) == 5


@pytest.mark.parametrize("data", [b"<testsuites/>", b"<testsuites><properties/></testsuites>",
                                  b"<testsuites><testcase name='outside-a-suite'/></testsuites>"])  # fmt: skip
def test_a_folder_of_xml_without_a_test_adds_nothing_to_the_status(reports_bucket, bitbucket, data):
    folder = f"empty-{len(data)}"
    delivered_with_tests(reports_bucket, folder, {"a.xml": data, "b.xml": data})
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s"


# --- each bound and rule, at its edge --------------------------------------------------------------------------------


def test_the_storage_stand_in_lists_as_cloud_storage_does_a_page_at_a_time(reports_bucket):
    """Cloud Storage answers a listing a page of at most maxResults (1,000) names at a time, in name order; the
    emulator answered every object at once, so a test could not see what a bound on the listing leaves out."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    for n in range(5):
        reports_bucket.put(BUCKET, f"paged/{n}.html", b"<html/>")
        reports_bucket.put(BUCKET, f"paged/sub/{n}.xml", b"<testsuite/>")
    client = storage.Client(project="local-project", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": reports_bucket.host})  # fmt: skip
    listed = client.list_blobs(BUCKET, prefix="paged/", page_size=3)
    assert [[b.name for b in page] for page in listed.pages] == [
        ["paged/0.html", "paged/1.html", "paged/2.html"], ["paged/3.html", "paged/4.html", "paged/sub/0.xml"],
        ["paged/sub/1.xml", "paged/sub/2.xml", "paged/sub/3.xml"], ["paged/sub/4.xml"]]  # fmt: skip
    assert [b.name for b in client.list_blobs(BUCKET, prefix="paged/", max_results=2)] == ["paged/0.html",
                                                                                          "paged/1.html"]  # fmt: skip
    xml = client.list_blobs(BUCKET, prefix="paged/", match_glob="**.xml", max_results=2)
    assert [b.name for b in xml] == ["paged/sub/0.xml", "paged/sub/1.xml"]


def test_xml_files_behind_more_other_objects_than_a_listing_takes_are_read_and_a_bound_says_partial(
    reports_bucket, bitbucket, monkeypatch
):
    """The listing asks Cloud Storage for XML files alone: an HTML coverage report of many files sorting before
    them hides none (before, the first 10 x TEST_FILES_MAX objects were listed, whatever they were, and the XML among
    them read: here TEST_FILES_MAX is 5, the coverage report 50 files), and one more XML file than the bound says
    "(partial)"."""
    monkeypatch.setattr(relay.junit, "TEST_FILES_MAX", 5)
    files = {f"htmlcov/f{n:03}.html": b"<html/>" for n in range(50)}
    files |= {f"t{n}.xml": junit(f'<testcase name="test_{n}"/>') for n in range(8)}
    downloads, listings = reports_bucket.downloads, len(reports_bucket.listings)
    delivered_with_tests(reports_bucket, "coverage", files, "SUCCESS")
    assert reports_bucket.downloads - downloads == 5
    [listing] = [q for q in reports_bucket.listings[listings:] if q.get("prefix") == "coverage/b-1/"]
    assert listing.get("maxResults") == "6"  # Cloud Storage lists one more than the bound, not all 8 XML files
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Succeeded in 3m 12s: 5 tests passed (partial)"


def test_fifty_files_are_all_read_and_a_fifty_first_makes_the_counts_partial(reports_bucket, bitbucket):
    for count, build_id, commit in ((50, "b-50", COMMIT), (51, "b-51", "5" * 40)):
        files = {f"t{n:02}.xml": junit(f'<testcase name="test_{n}"/>') for n in range(count)}
        downloads = reports_bucket.downloads
        delivered_with_tests(reports_bucket, "fifty", files, "SUCCESS", build_id, commit)
        assert reports_bucket.downloads - downloads == 50
    [fifty] = bitbucket.app.shown("acme", "webapp", COMMIT)
    [past] = bitbucket.app.shown("acme", "webapp", "5" * 40)
    assert fifty["description"] == "Succeeded in 3m 12s: 50 tests passed"
    assert past["description"] == "Succeeded in 3m 12s: 50 tests passed (partial)"


def sized(size: int, name: str) -> bytes:
    head = junit(f'<testcase name="{name}"/>')
    return head[: -len(b"</testsuite>")] + b" " * (size - len(head)) + b"</testsuite>"


def test_each_download_takes_only_what_is_left_of_the_total_bound(reports_bucket, bitbucket, monkeypatch):
    """Files of 1,500 and 1,800 bytes within 2,000 each but 3,000 in all: the second is not read past what is left."""
    monkeypatch.setattr(relay.junit, "TEST_FILE_BYTES_MAX", 2000)
    monkeypatch.setattr(relay.junit, "TEST_BYTES_MAX", 3000)
    delivered_with_tests(reports_bucket, "total", {"a.xml": sized(1500, "test_a"), "b.xml": sized(1800, "test_b")})
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 1 tests passed (partial)"


def test_partial_counts_are_kept_for_the_build_so_a_delivery_of_the_message_again_reads_nothing(
    reports_bucket, bitbucket, monkeypatch, capsys
):
    """Reading a build's files to a bound costs the same each time, for the same counts (20 MB of them cost 10 s of
    processor time, before, on every delivery of the final message while Bitbucket refused it): what they showed,
    partial or not, is kept for the build."""
    monkeypatch.setattr(relay.junit, "TEST_FILE_BYTES_MAX", 2000)
    delivered_with_tests(reports_bucket, "partial", {"a.xml": sized(1500, "test_a"), "b.xml": sized(2500, "test_b")})
    downloads = reports_bucket.downloads
    deliver(build("FAILURE", "b-1", substitutions={"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/partial/b-1/",
                                                   "COMMIT_SHA": COMMIT}))  # fmt: skip
    assert reports_bucket.downloads == downloads
    said = [line["message"] for line in log_lines(capsys.readouterr().out)]
    assert said[-1].startswith("Did not post FAILED (Failed after 3m 12s: 1 tests passed (partial)): Bitbucket")


def test_a_later_build_never_shows_an_earlier_builds_partial_counts(reports_bucket, bitbucket, monkeypatch):
    """Partial counts are kept for their build alone: a later build naming the same folder reads it again."""
    monkeypatch.setattr(relay.junit, "TEST_FILE_BYTES_MAX", 2000)
    folder = f"gs://{BUCKET}/kept/b-1/b-2/"
    reports_bucket.put(BUCKET, "kept/b-1/b-2/a.xml", sized(1500, "test_a"))
    reports_bucket.put(BUCKET, "kept/b-1/b-2/b.xml", sized(2500, "test_b"))
    deliver(build("FAILURE", "b-1", substitutions={"_BITBUCKET_TEST_REPORTS": folder, "COMMIT_SHA": COMMIT}))
    reports_bucket.put(BUCKET, "kept/b-1/b-2/b.xml", sized(1500, "test_b"))
    other = "2" * 40
    deliver(build("FAILURE", "b-2", substitutions={"_BITBUCKET_TEST_REPORTS": folder, "COMMIT_SHA": other}))
    [first] = bitbucket.app.shown("acme", "webapp", COMMIT)
    [second] = bitbucket.app.shown("acme", "webapp", other)
    assert first["description"] == "Failed after 3m 12s: 1 tests passed (partial)"
    assert second["description"] == "Failed after 3m 12s: 2 tests passed"


def passing_cases(count: int, tail: bytes = b"</testsuite>") -> bytes:
    """A suite of `count` passing test cases: 1 + `count` elements, then `tail`."""
    return b"<testsuite>" + b'<testcase name="t"/>' * count + tail


def test_a_file_is_read_up_to_its_element_bound_and_not_past_it(monkeypatch):
    """Each element costs processor time, holding the GIL (20 MB of <a/> took 10 s): a file is read up to
    JUNIT_FILE_ELEMENTS_MAX elements, its counts partial, and the parser never reaches what follows (here, what
    is not XML at all)."""
    monkeypatch.setattr(relay.junit, "JUNIT_FILE_ELEMENTS_MAX", 1000, raising=False)
    results = relay.junit.parse_junit(passing_cases(1500, b"<<< not XML"))
    assert results.counts() == "999 tests passed (partial)"
    within = relay.junit.parse_junit(passing_cases(999))
    assert within.counts() == "999 tests passed"


def test_namespace_declarations_count_as_elements_read(monkeypatch):
    """A namespace declaration costs the parser as much as an element: counted alike."""
    monkeypatch.setattr(relay.junit, "JUNIT_FILE_ELEMENTS_MAX", 1000, raising=False)
    declared = b"<testsuite>" + b'<testcase name="t" xmlns:p="u"/>' * 600 + b"<<< not XML"
    assert relay.junit.parse_junit(declared).counts() == "499 tests passed (partial)"


def test_a_builds_files_are_read_up_to_its_element_bound_and_the_rest_not_downloaded(
    reports_bucket, bitbucket, monkeypatch
):
    """Past JUNIT_BUILD_ELEMENTS_MAX elements of a build's files, the file being read is read no further and the
    files after it are not downloaded: the counts say partial."""
    monkeypatch.setattr(relay.junit, "JUNIT_FILE_ELEMENTS_MAX", 1000, raising=False)
    monkeypatch.setattr(relay.junit, "JUNIT_BUILD_ELEMENTS_MAX", 1500, raising=False)
    downloads = reports_bucket.downloads
    files = {f"{name}.xml": passing_cases(800) for name in ("a", "b", "c")}  # 801 elements each
    delivered_with_tests(reports_bucket, "elements", files, "SUCCESS")
    assert reports_bucket.downloads - downloads == 2
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == f"Succeeded in 3m 12s: {800 + (1500 - 801 - 1)} tests passed (partial)"


def test_a_running_build_reads_no_test_files(reports_bucket, bitbucket):
    downloads = reports_bucket.downloads
    delivered_with_tests(reports_bucket, "running", {"junit.xml": junit(failing_case("test_a"))}, "WORKING")
    assert reports_bucket.downloads == downloads
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Running"


def test_pytests_xunit1_line_is_0_based_so_a_test_without_a_place_in_its_text_is_annotated_a_line_lower():
    results = relay.junit.parse_junit(
        junit(failing_case("test_a", "no place here", file="tests/test_app.py", line="9"))
    )
    assert [(a.path, a.line) for a in relay.junit.test_annotations(results)] == [("tests/test_app.py", 10)]


def test_gotestsums_failed_gives_way_to_the_first_line_of_output_that_says_more():
    [failure] = relay.junit.parse_junit((JUNIT / "gotestsum.xml").read_bytes()).failures
    assert failure.message == "price_test.go:7: Price(100) = 119, want 120"


def test_the_last_place_in_the_repository_wins_and_line_0_is_no_place():
    text = ("tests/test_app.py:12: in test_a\n    check()\ntests/helpers.py:5: AssertionError\n"
            "/usr/lib/python3.12/unittest/case.py:9: in run\ntests/conftest.py:0: in fixture")  # fmt: skip
    [annotation] = relay.junit.test_annotations(relay.junit.parse_junit(junit(failing_case("test_a", text))))
    assert (annotation.path, annotation.line) == ("tests/helpers.py", 5)


def test_the_counts_come_before_a_long_failure_detail_in_the_255_character_description():
    b = build("FAILURE", "b-1", statusDetail="x" * 300)
    update = relay.translate.translate(b, relay.config.Config())
    assert isinstance(update, relay.translate.Update)
    tested = relay.junit.with_tests(update, relay.junit.TestResults(passed=1, failed=1))
    assert tested.status.description == "Failed after 3m 12s: 1 of 2 tests failed"


def test_the_first_five_failed_tests_are_shown_in_the_report():
    update = relay.translate.translate(build("FAILURE", "b-1"), relay.config.Config())
    assert isinstance(update, relay.translate.Update)
    cases = (failing_case(f"test_{n}", f"tests/test_app.py:{n + 1}: E", message=f"assert {n} == 7") for n in range(7))
    tested = relay.junit.with_tests(update, relay.junit.parse_junit(junit(*cases)))
    assert tested.report is not None
    shown = [line for line in tested.report.details.splitlines() if line.startswith("Failed test: ")]
    assert shown == [f"Failed test: tests.test_app.test_{n}: assert {n} == 7" for n in range(5)]
    assert len(tested.report.annotations) == 7


@contextlib.contextmanager
def storage_answering(status: int, files: dict[str, bytes | None] | None = None):
    """A loopback Cloud Storage that answers every call with `status` (Google's JSON error), counting them; with
    `files`, it lists those objects and serves each, answering `status` to the download of one whose data is None."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread
    from urllib.parse import unquote, urlsplit

    calls = []

    class Answering(BaseHTTPRequestHandler):
        def do_GET(self):
            calls.append(self.path)
            path = urlsplit(self.path).path
            code, body, kind = status, json.dumps({"error": {"code": status, "message": "Backend Error"}}).encode(), ""
            if files is not None and path.endswith("/o"):  # a listing
                items = [{"name": n, "bucket": BUCKET, "generation": "1"} for n in sorted(files)]
                code, body = 200, json.dumps({"kind": "storage#objects", "items": items}).encode()
            elif files is not None and path.startswith("/download/") and files.get(unquote(path.split("/o/")[1])):
                code, body, kind = 200, files[unquote(path.split("/o/")[1])], "application/octet-stream"
            self.send_response(code)
            self.send_header("Content-Type", kind or "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "named"), [(429, "folder"), (503, "folder"), (503, "manifest")])
def test_cloud_storage_failing_for_now_costs_the_status_no_more_than_the_events_deadline_allows(
    bitbucket, monkeypatch, capsys, status, named
):
    """Cloud Storage's client retries a 429 or 5xx for 120 s whatever a call's timeout: the test files (listed in a
    folder, or downloaded from a manifest) are tried only while the event keeps its writes' reserve (2 s of reading
    here), then the status lands without them."""
    monkeypatch.setenv("EVENT_DEADLINE_SECONDS", str(relay.scope.WRITES_RESERVE + 2))
    monkeypatch.setenv("TEST_REPORT_BUCKETS", BUCKET)
    with storage_answering(status) as (host, calls):
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
        if named == "folder":
            subs = {"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/down/b-1/", "COMMIT_SHA": COMMIT}
            deliver(build("FAILURE", "b-1", substitutions=subs))
        else:
            deliver(build("SUCCESS", "b-1", results={"artifactManifest": f"gs://{BUCKET}/down/artifacts-b-1.json"}))
    [status_shown] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status_shown["description"] == ("Failed after 3m 12s" if named == "folder" else "Succeeded in 3m 12s")
    assert calls  # asked, and again within the 2 s (with random backoff): not for two minutes, past the deadline
    [warning] = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    assert warning["message"] == "Test results left out: listing the test report files failed (RetryError)"


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (403, ["Cloud Storage refused listing the test report files (403): give the function's service account "
               "roles/storage.objectViewer on the bucket (make deploy TEST_REPORT_BUCKETS=...)"]),
        (404, []),  # the build's folder or bucket is gone: nothing for an operator to do
        (400, ["Test results left out: listing the test report files failed (BadRequest 400)"]),
    ],
)  # fmt: skip
def test_cloud_storage_refusing_the_test_files_leaves_one_warning_saying_what_to_grant_and_the_status_lands(
    bitbucket, monkeypatch, capsys, status, said
):
    monkeypatch.setenv("TEST_REPORT_BUCKETS", BUCKET)
    with storage_answering(status) as (host, calls):
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
        subs = {"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/refused/b-1/", "COMMIT_SHA": COMMIT}
        deliver(build("FAILURE", "b-1", substitutions=subs))
    assert calls
    [status_shown] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status_shown["description"] == "Failed after 3m 12s"
    warnings = [line["message"] for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    assert warnings == said


def test_a_manifest_line_whose_file_was_overwritten_since_shows_nothing_of_the_newer_file(
    reports_bucket, bitbucket, capsys
):
    """The manifest names the generation Cloud Build uploaded: a later upload under the same name (another build
    writing the same path) is not that build's file, and a bucket without versioning has no other to read."""
    written = reports_bucket.put(BUCKET, "over/b-1/TEST-a.xml", junit('<testcase name="test_a"/>'))
    reports_bucket.put(BUCKET, "over/b-1/TEST-a.xml", junit(failing_case("test_of_a_later_build")))
    manifest = json.dumps({"location": f"gs://{BUCKET}/over/b-1/TEST-a.xml#{written}"}).encode()
    reports_bucket.put(BUCKET, "over/b-1/artifacts-b-1.json", manifest)
    deliver(build("SUCCESS", "b-1", results={"artifactManifest": f"gs://{BUCKET}/over/b-1/artifacts-b-1.json"}))
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Succeeded in 3m 12s"
    assert [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"] == []


def test_a_file_of_exactly_the_bound_is_read_and_of_one_past_it_no_more_than_the_bound_and_a_byte_is_served(
    reports_bucket, bitbucket, monkeypatch, capsys
):
    """Past the bound a file only makes the counts partial, silently: Cloud Storage serves the bound and one byte
    of it (which tells it is past), never the rest of its 400 KB."""
    monkeypatch.setattr(relay.junit, "TEST_FILE_BYTES_MAX", 2000)
    huge = b"<testsuite>" + b"<testcase name='t'/>" * 20_000 + b"</testsuite>"
    served = reports_bucket.served
    delivered_with_tests(reports_bucket, "exact", {"a.xml": sized(2000, "test_a"), "huge.xml": huge})
    assert reports_bucket.served - served == 2000 + 2001
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 1 tests passed (partial)"
    assert [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"] == []


def test_a_teams_build_reads_the_bucket_its_own_project_is_given(two_teams, bitbucket, monkeypatch):
    monkeypatch.setenv("TEST_REPORT_BUCKETS", "team-a=acme-a-reports team-b=acme-b-reports")
    two_teams.put("acme-a-reports", "a-3/junit.xml", junit(failing_case("test_a", "team A's text")))
    delivered_in(team_build("team-a", "a-3", "gs://acme-a-reports/a-3/"), "team-a")
    [status] = bitbucket.app.shown("acme", "a-web", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 1 of 1 tests failed"


def test_a_file_that_is_not_junit_after_good_ones_costs_only_itself_with_one_warning(reports_bucket, bitbucket, capsys):
    """Files are read in name order: one that is not JUnit drops none of the counts read before it, and says so."""
    reports_bucket.put(BUCKET, "mixed/b-1/a.xml", (JUNIT / "gotestsum.xml").read_bytes())
    reports_bucket.put(BUCKET, "mixed/b-1/z.xml", b"not xml")
    deliver(build("FAILURE", "b-1", substitutions={"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/mixed/b-1/",
                                                   "COMMIT_SHA": COMMIT}))  # fmt: skip
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 1 of 4 tests failed (partial)"
    warnings = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    assert [w["message"].split(" (")[0] for w in warnings] == [
        "Skipped the test report gs://acme-test-reports/mixed/b-1/z.xml: not a JUnit XML file"
    ]


def test_files_after_the_total_bound_is_reached_are_not_downloaded_and_the_counts_say_partial(
    reports_bucket, bitbucket, monkeypatch
):
    """A first file of exactly the build's bound spends it: the next is not downloaded, and the counts say partial."""
    monkeypatch.setattr(relay.junit, "TEST_FILE_BYTES_MAX", 2000)
    monkeypatch.setattr(relay.junit, "TEST_BYTES_MAX", len(sized(1500, "test_a")))
    downloads = reports_bucket.downloads
    delivered_with_tests(reports_bucket, "spent", {"a.xml": sized(1500, "test_a"), "b.xml": sized(1800, "test_b")})
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 1 tests passed (partial)"
    assert reports_bucket.downloads == downloads + 1  # a.xml alone


def test_a_test_file_cloud_storage_refuses_costs_only_itself_and_says_what_to_grant(bitbucket, monkeypatch, capsys):
    """Of three files in name order, the middle one's download is refused (403): the other two are counted, the counts
    say partial, and one WARNING names the file and the role to grant."""
    monkeypatch.setenv("TEST_REPORT_BUCKETS", BUCKET)
    go = (JUNIT / "gotestsum.xml").read_bytes()
    files = {"refused/b-1/a.xml": go, "refused/b-1/b.xml": None, "refused/b-1/c.xml": go}
    with storage_answering(403, files) as (host, _):
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
        subs = {"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/refused/b-1/", "COMMIT_SHA": COMMIT}
        deliver(build("FAILURE", "b-1", substitutions=subs))
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 2 of 8 tests failed (partial)"
    warnings = [line["message"] for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    assert warnings == [
        f"Cloud Storage refused reading gs://{BUCKET}/refused/b-1/b.xml (403): give the function's service account "
        "roles/storage.objectViewer on the bucket (make deploy TEST_REPORT_BUCKETS=...)"
    ]


def test_a_builds_folder_and_its_artifacts_manifest_are_both_read(reports_bucket, bitbucket):
    """A passing build naming a folder of JUnit files that also uploaded artifacts: the counts add both up."""
    reports_bucket.put(BUCKET, "both/b-1/unit.xml", junit('<testcase name="test_a"/>'))
    ledger = "target/surefire-reports/TEST-com.acme.payments.LedgerTest.xml"
    generation = reports_bucket.put(BUCKET, ledger, (JUNIT / "surefire-passing.xml").read_bytes())
    reports_bucket.put(BUCKET, "artifacts-b-1.json", json.dumps({"location": f"gs://{BUCKET}/{ledger}#{generation}"})
                       .encode())  # fmt: skip
    subs = {"_BITBUCKET_TEST_REPORTS": f"gs://{BUCKET}/both/b-1/", "COMMIT_SHA": COMMIT}
    deliver(
        build("SUCCESS", "b-1", substitutions=subs, results={"artifactManifest": f"gs://{BUCKET}/artifacts-b-1.json"})
    )
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Succeeded in 3m 12s: 12 tests passed (1 skipped)"


def test_a_manifest_with_a_line_that_is_not_utf_8_still_gives_its_other_files(reports_bucket, bitbucket):
    """Cloud Build writes the manifest, but its object names are the build's: one odd byte costs only its line."""
    ledger = "target/surefire-reports/TEST-com.acme.payments.LedgerTest.xml"
    generation = reports_bucket.put(BUCKET, ledger, (JUNIT / "surefire-passing.xml").read_bytes())
    lines = [b'{"location": "gs://' + BUCKET.encode() + b'/target/caf\xe9.jar#3"}',
             json.dumps({"location": f"gs://{BUCKET}/{ledger}#{generation}"}).encode()]  # fmt: skip
    reports_bucket.put(BUCKET, "artifacts-b-1.json", b"\n".join(lines))
    deliver(build("SUCCESS", "b-1", results={"artifactManifest": f"gs://{BUCKET}/artifacts-b-1.json"}))
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Succeeded in 3m 12s: 11 tests passed (1 skipped)"


def test_three_files_add_up_to_the_total_bound_and_a_fourth_is_not_read(reports_bucket, bitbucket, monkeypatch):
    """The bound is on the sum of what a build's files take, not on each file again."""
    monkeypatch.setattr(relay.junit, "TEST_FILE_BYTES_MAX", 2000)
    monkeypatch.setattr(relay.junit, "TEST_BYTES_MAX", 3 * len(sized(1000, "test_a")))
    files = {f"{n}.xml": sized(1000, f"test_{n}") for n in "abcd"}
    downloads = reports_bucket.downloads
    delivered_with_tests(reports_bucket, "sum", files)
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "Failed after 3m 12s: 3 tests passed (partial)"
    assert reports_bucket.downloads == downloads + 3
