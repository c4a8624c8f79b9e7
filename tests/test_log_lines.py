"""A failed step's log lines, pure: which step is read, the query that reads it, how each line is cleaned before it
leaves Google Cloud (escape codes, control characters, credentials), and the errors each tool's row of the matchers
finds in its real output (tests/data/logs), on the repository's own paths."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import relay.annotations
import relay.config
import relay.masking
import relay.report
import relay.step_log
import relay.translate
from standins.builds import build
from standins.google import _parse_filter

LOGS = Path(__file__).resolve().parent / "data" / "logs"


def found(name: str, directory: str) -> list[tuple[str | None, int | None, str, str]]:
    lines = relay.step_log.clean_lines((LOGS / f"{name}.txt").read_text().splitlines())
    return [(a.path, a.line, a.severity, a.message) for a in relay.step_log.annotations_from(lines, directory)]


# --- each tool's row, on its real output ---------------------------------------------------------------

WRONG_TYPE = "Type 'string' is not assignable to type 'number'. (TS2322)"


@pytest.mark.parametrize(
    ("name", "directory", "expected"),
    [
        ("tsc", "web", [("web/src/app.ts", 2, "error", WRONG_TYPE), ("web/src/app.ts", 6, "error", WRONG_TYPE)]),
        ("eslint-stylish", "web", [
            ("web/src/cart.js", 1, "error", "'unused' is assigned a value but never used (no-unused-vars)"),
            ("web/src/cart.js", 2, "error", "'b' is defined but never used (no-unused-vars)"),
            ("web/src/cart.js", 3, "error", "'c' is not defined (no-undef)")]),
        ("eslint-unix", "web", [
            ("web/src/cart.js", 1, "error", "'unused' is assigned a value but never used. (no-unused-vars)"),
            ("web/src/cart.js", 2, "error", "'b' is defined but never used. (no-unused-vars)"),
            ("web/src/cart.js", 3, "error", "'c' is not defined. (no-undef)")]),
        ("jest", "web", [("web/src/cart.test.js", 3, "error", "adds tax to the price")]),
        ("gcc", "native", [
            ("native/main.c", 4, "error", "expected ‘;’ before ‘return’"),
            ("native/main.c", 3, "warning", "initialization of ‘int’ from ‘char *’ makes integer from pointer without "
                                            "a cast [-Wint-conversion]")]),
        # a fatal error ends the compilation: an error (HIGH), like any other
        ("gcc-fatal", "native", [("native/main.c", 2, "error", "prices.h: No such file or directory")]),
        ("rustc", "native", [("native/main.rs", 2, "error", "mismatched types (E0308)")]),
        ("javac", "api", [
            ("api/src/main/java/com/acme/App.java", 4, "error",
             "incompatible types: String cannot be converted to int"),
            ("api/src/main/java/com/acme/App.java", 5, "error", "cannot find symbol")]),
        ("maven", "api", [
            ("api/src/main/java/com/acme/App.java", 4, "error",
             "incompatible types: java.lang.String cannot be converted to int"),
            ("api/src/main/java/com/acme/App.java", 5, "error", "cannot find symbol")]),
        ("kotlin-gradle", "app", [
            ("app/src/main/kotlin/com/acme/Cart.kt", 4, "error",
             "Type mismatch: inferred type is String but Int was expected"),
            ("app/src/main/kotlin/com/acme/Cart.kt", 9, "warning", "Variable 'unused' is never used")]),
        ("python-traceback", "service", [
            ("service/run.py", 3, "error", "ValueError: invalid literal for int() with base 10: 'two'"),
            ("service/app/prices.py", 6, "error", "ValueError: invalid literal for int() with base 10: 'two'"),
            ("service/app/prices.py", 2, "error", "ValueError: invalid literal for int() with base 10: 'two'")]),
        ("go-vet", "gosvc", [
            ("gosvc/pricing/price.go", 6, "error", 'fmt.Printf format %d has arg "net" of wrong type string')]),
        # go test names a test file without its package's directory: said, placed nowhere (go test -fullpath places it)
        ("go-test", "gosvc", [(None, None, "error", "price_test.go:7: Price(100) = 119, want 120")]),
        ("terraform", "infra", [("infra/main.tf", 12, "error", "Unsupported argument")]),
    ],
)  # fmt: skip
def test_each_tools_errors_land_on_the_repositorys_file_and_line(name, directory, expected):
    assert found(name, directory) == expected


FAILING_SUITE = """
def login(user):
    return user.upper()


def test_login():
    assert login("ada") == "Ada"


def test_logout():
    assert True
"""


def test_pytests_own_output_puts_the_assertion_on_its_test_file_and_line(tmp_path):
    """pytest runs here: a step with `dir: service` that runs pytest prints paths relative to service/."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_auth.py").write_text(FAILING_SUITE)
    ran = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests"], cwd=tmp_path,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert ran.returncode == 1
    annotations = relay.step_log.annotations_from(relay.step_log.clean_lines(ran.stdout.splitlines()), "service")
    assert [(a.path, a.line, a.tool) for a in annotations] == [("service/tests/test_auth.py", 7, "pytest")]
    assert annotations[0].message.startswith("AssertionError: assert 'ADA' == 'Ada'")


TWO_FAILURES = """
class Unpaid(Exception):
    pass


def charge(cents):
    raise Unpaid(f"card declined for {cents} cents")


def test_totals():
    assert sum([1, 2]) == 4


def test_charge():
    charge(100)
"""


def test_a_pytest_failure_whose_e_line_names_no_error_is_annotated_with_its_type_not_the_previous_failures_message(
    tmp_path,
):
    """pytest prints `tests/test_pay.py:7: Unpaid` under `E   test_pay.Unpaid: ...`, which the `E` row does not read:
    the location is still an error, said by its type, and never with the E line of the failure printed before it."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_pay.py").write_text(TWO_FAILURES)
    ran = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests"], cwd=tmp_path,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert "tests/test_pay.py:7: Unpaid" in ran.stdout.splitlines()
    annotations = relay.step_log.annotations_from(relay.step_log.clean_lines(ran.stdout.splitlines()), "service")
    assert [(a.path, a.line, a.severity, a.message) for a in annotations] == [
        ("service/tests/test_pay.py", 11, "error", "assert 3 == 4"),
        ("service/tests/test_pay.py", 7, "error", "Unpaid"),
    ]


@pytest.mark.parametrize(
    ("line", "directory"),
    [
        ("/usr/lib/python3.12/json/decoder.py:355: error: boom", "service"),  # absolute, outside /workspace
        ("../../etc/passwd.py:1: error: boom", "service"),  # past the repository's root
        ("/workspace/../etc/shadow.c:1:1: error: boom", ""),
        ("src/app.c:1:1: error: boom", "/opt/build"),  # a step dir outside the repository
        ("/workspace/node_modules/left-pad/index.js:3:1: error: boom", ""),  # installed, not the repository's
        ("localhost:8080: connection refused", ""),  # not a file
        ("127.0.0.1:5432: error: refused", ""),
        ("C:\\\\src\\\\app.c:1:1: error: boom", ""),
    ],
)
def test_no_annotation_is_placed_outside_the_repository(line, directory):
    assert [a for a in relay.step_log.annotations_from([line], directory) if a.path is not None] == []


def test_paths_become_repository_paths():
    assert relay.annotations.repository_path("/workspace/service/app.py", "web") == "service/app.py"
    assert relay.annotations.repository_path("tests/test_x.py", "service") == "service/tests/test_x.py"
    assert relay.annotations.repository_path("./src/../lib/x.ts", "web") == "web/lib/x.ts"
    assert relay.annotations.repository_path("x.go", "/workspace/gosvc") == "gosvc/x.go"
    assert relay.annotations.repository_path("file:///workspace/app/A.kt", "") == "app/A.kt"


def test_at_most_a_hundred_annotations_errors_first():
    lines = [f"src/w{n}.c:1:1: warning: w" for n in range(60)] + [f"src/e{n}.c:1:1: error: e" for n in range(60)]
    annotations = relay.step_log.annotations_from(lines, "")
    assert len(annotations) == relay.annotations.ANNOTATIONS_MAX
    assert [a.severity for a in annotations] == ["error"] * 60 + ["warning"] * 40


def test_of_two_errors_on_one_line_the_first_found_is_the_one_annotated():
    annotations = relay.step_log.annotations_from(
        ["src/app.c:4:5: error: expected ';' before 'return'", "src/app.c:4:12: error: 'total' undeclared"], ""
    )
    assert [(a.path, a.line, a.message) for a in annotations] == [("src/app.c", 4, "expected ';' before 'return'")]


def test_a_warning_found_first_keeps_its_place_and_errors_come_first_each_in_the_order_found():
    annotations = relay.step_log.annotations_from(
        ["src/c.c:1:1: warning: w1", "src/d.c:2:1: error: e1", "src/c.c:1:9: error: e0", "src/a.c:3:1: warning: w2",
         "src/b.c:4:1: error: e2"], ""
    )  # fmt: skip
    assert [(a.path, a.severity, a.message) for a in annotations] == [
        ("src/d.c", "error", "e1"),
        ("src/b.c", "error", "e2"),
        ("src/c.c", "warning", "w1"),
        ("src/a.c", "warning", "w2"),
    ]


def test_a_file_is_annotated_as_a_whole_only_where_none_of_its_lines_is():
    """pytest's summary names a failed test's file without a line: its own annotation only for a file whose failure
    was not placed on a line."""
    lines = [
        "tests/test_cart.py:12: AssertionError",
        "FAILED tests/test_cart.py::test_total - AssertionError: assert 3 == 4",
        "FAILED tests/test_tax.py::test_rate - KeyError: 'FR'",
    ]
    annotations = relay.step_log.annotations_from(lines, "")
    assert [(a.path, a.line, a.message) for a in annotations] == [
        ("tests/test_cart.py", 12, "AssertionError"),
        ("tests/test_tax.py", None, "test_rate: KeyError: 'FR'"),
    ]


def test_each_failure_placed_on_no_file_is_its_own_annotation_of_the_report():
    lines = ["    price_test.go:7: Price(100) = 119, want 120", "    tax_test.go:9: Tax(FR) = 0, want 20"]
    annotations = relay.step_log.annotations_from(lines, "gosvc")
    assert [(a.path, a.line, a.message) for a in annotations] == [
        (None, None, "price_test.go:7: Price(100) = 119, want 120"),
        (None, None, "tax_test.go:9: Tax(FR) = 0, want 20"),
    ]


def test_a_failed_tests_annotation_from_its_junit_file_wins_over_the_log_line_at_the_same_place():
    update = relay.translate.translate(
        build("FAILURE", steps=[{"id": "unit", "status": "FAILURE"}]), relay.config.Config()
    )
    assert isinstance(update, relay.translate.Update)
    assert update.report is not None
    junit = relay.annotations.Annotation("tests/test_cart.py", 12, "error", "test_total: assert 3 == 4", "JUnit")
    report = replace(update.report, annotations=(junit,))
    from_log = relay.annotations.Annotation("tests/test_cart.py", 12, "error", "AssertionError", "pytest")
    elsewhere = relay.annotations.Annotation("tests/test_cart.py", 30, "error", "KeyError", "pytest")
    shown = report.with_excerpt(relay.step_log.Excerpt("step 0 (unit)", ("E   assert 3 == 4",), (from_log, elsewhere)))
    assert shown.annotations == (junit, elsewhere)


# --- cleaning: what may leave Google Cloud -------------------------------------------------------------


def test_escape_codes_and_control_characters_are_removed_and_lines_clipped():
    [line] = relay.step_log.clean_lines(
        ["\x1b[31mFAILED\x1b[0m \x1b]8;;https://x\x07link\x1b]8;;\x07 a\x00b\u202ec\u200bd" + "x" * 500]
    )
    assert line.startswith("FAILED link abcd")
    assert line.isprintable()
    assert len(line) <= relay.step_log.LOG_LINE_MAX


@pytest.mark.parametrize(
    "secret",
    [
        "ATATT3xFfGF0Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4OTA",  # Atlassian API token
        "ATCTT3xFfGN0cmVwb3NpdG9yeWFjY2Vzc3Rva2VuMTIzNDU",  # Bitbucket access token
        "ATBBa1b2c3d4e5f6g7h8i9j0k1l2",  # app password
        "NjU2OTAyNTA4NDE0OkqAoD8Zb6WRo9V2L7uyXrAqvT5w",  # Data Center HTTP access token
        "ghp_1234567890abcdefghijklmnopqrstuvwxyzAB",  # GitHub
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        "AKIAIOSFODNN7EXAMPLE",  # AWS access key id
        "AIzaSyD-1234567890abcdefghijklmnopqrstu",  # Google API key
        "ya29.a0AfH6SMBx1234567890abcdef",  # Google OAuth token
    ],
)
def test_anything_shaped_like_a_credential_is_masked(secret):
    [line] = relay.step_log.clean_lines([f"token in use: {secret} (from the environment)"])
    assert secret not in line
    assert relay.masking.MASKED in line


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("curl -H 'Authorization: Bearer s3cr3t-v4lue.x' https://x", "Bearer [masked]"),
        ("git clone https://ci:hunter2-pass@bitbucket.org/acme/app.git", "https://[masked]@bitbucket.org"),
        ("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCY", "AWS_SECRET_ACCESS_KEY=[masked]"),
        ('{"password": "correct horse battery"}', '"password": "[masked]'),
    ],
)
def test_credentials_in_headers_urls_and_assignments_are_masked_keeping_what_they_are(raw, kept):
    [line] = relay.step_log.clean_lines([raw])
    assert kept in line
    assert not any(s in line for s in ("s3cr3t", "hunter2", "wJalrX", "horse"))


def test_the_functions_own_credentials_are_masked_and_a_private_key_block_removed_whole():
    lines = relay.step_log.clean_lines(
        ["using bb-token-own-1234 now", "-----BEGIN RSA PRIVATE KEY-----", "MIIEow...", "-----END RSA PRIVATE KEY-----",
         "after"],
        secrets=["bb-token-own-1234"],
    )  # fmt: skip
    assert lines == ["using [masked] now", "[private key removed]", "after"]


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.text(max_size=300), max_size=30), directory=st.sampled_from(["", "service", "/workspace/x"]))
def test_any_log_text_gives_plain_lines_and_annotations_only_inside_the_repository(lines, directory):
    secret = "own-secret-value-42"
    cleaned = relay.step_log.clean_lines([*lines, f"x {secret} y"], secrets=[secret])
    assert all(line.isprintable() and len(line) <= relay.step_log.LOG_LINE_MAX for line in cleaned)
    assert not any(secret in line for line in cleaned)
    for annotation in relay.step_log.annotations_from(cleaned, directory):
        assert annotation.message.isprintable()
        if annotation.path is not None:
            assert not annotation.path.startswith(("/", "..")), annotation.path
            assert ".." not in annotation.path.split("/")


# --- which step is read, and the query ------------------------------------------------------------------


def test_the_first_step_that_failed_the_build_is_read_and_a_passing_build_reads_nothing():
    steps = [{"id": "lint", "status": "FAILURE", "allowFailure": True}, {"id": "unit", "status": "FAILURE",
             "dir": "service"}, {"id": "deploy", "status": "QUEUED"}]  # fmt: skip
    step = relay.step_log.failed_step(build("FAILURE", steps=steps))
    assert step == relay.step_log.FailedStep("b-0001", 1, "unit", "service")
    assert step.label == 'Step #1 - "unit"'
    assert relay.step_log.failed_step(build("SUCCESS", steps=steps)) is None
    assert relay.step_log.failed_step(build("CANCELLED", steps=steps)) is None


def test_without_step_statuses_failure_info_names_the_step():
    b = build("FAILURE", steps=[{"name": "a"}, {"name": "b"}],
              failureInfo={"type": "USER_BUILD_STEP", "detail": 'Build step 1 "b" failed: exit status 2'})  # fmt: skip
    assert relay.step_log.failed_step(b) == relay.step_log.FailedStep("b-0001", 1, "", "")
    assert relay.step_log.failed_step(b).label == "Step #1"


def test_failure_info_naming_a_step_past_the_last_reads_no_step_and_the_last_step_is_read():
    """Cloud Build counts steps from 0 (`build step 0` is `Step #0`): with two steps, `build step 2` names none."""
    steps = [{"name": "a"}, {"name": "b"}]
    past = build("FAILURE", steps=steps, failureInfo={"type": "USER_BUILD_STEP", "detail": 'build step 2 "c" failed'})
    assert relay.step_log.failed_step(past) is None
    last = build("FAILURE", steps=steps, failureInfo={"type": "USER_BUILD_STEP", "detail": 'build step 1 "b" failed'})
    assert relay.step_log.failed_step(last) == relay.step_log.FailedStep("b-0001", 1, "", "")
    first = build("FAILURE", steps=steps, failureInfo={"type": "USER_BUILD_STEP", "detail": 'build step 0 "a" failed'})
    assert relay.step_log.failed_step(first) == relay.step_log.FailedStep("b-0001", 0, "", "")


@pytest.mark.parametrize(
    ("logging", "why"),
    [("NONE", "the build's logging is NONE"), ("GCS_ONLY", "only to its logs bucket (options.logging GCS_ONLY)")],
)
def test_a_build_whose_log_is_not_in_cloud_logging_says_why(logging, why):
    said = relay.step_log.failed_step(
        build("FAILURE", steps=[{"id": "x", "status": "FAILURE"}], options={"logging": logging})
    )
    assert isinstance(said, str)
    assert why in said


@given(step_id=st.text(max_size=40).filter(str.isprintable))
def test_the_query_names_exactly_the_build_and_its_step_whatever_the_steps_id(step_id):
    step = relay.step_log.FailedStep("b-0001", 3, step_id, "")
    clauses = _parse_filter(relay.step_log.log_filter("acme-ci", step))
    assert clauses == [
        [("logName", "projects/acme-ci/logs/cloudbuild")],
        [("resource.type", "build")],
        [("resource.labels.build_id", "b-0001")],
        [("labels.build_step", step.label), ("labels.build_step", "MAIN")],
    ]


# --- the excerpt in the report ------------------------------------------------------------------------------


def test_the_excerpt_ends_the_reports_details_and_within_2000_characters_the_last_lines_win():
    update = relay.translate.translate(
        build("FAILURE", steps=[{"id": "unit", "status": "FAILURE"}]), relay.config.Config()
    )
    assert isinstance(update, relay.translate.Update)
    assert update.report is not None
    lines = [f"line {n:03} " + "x" * 150 for n in range(30)]
    report = update.report.with_excerpt(relay.step_log.Excerpt("step 0 (unit)", tuple(lines)))
    assert len(report.details) <= relay.report.DETAILS_MAX
    assert report.details.endswith(lines[-1])
    assert "Last lines of step 0 (unit):" in report.details
    assert lines[0] not in report.details  # the first lines gave way
    assert report.details.startswith(update.report.details)


def _excerpt_shown(lines: list[str]) -> tuple[relay.report.Report, list[str]]:
    """A failed build's report with `lines` as its step's last lines, and the lines its details show."""
    update = relay.translate.translate(
        build("FAILURE", steps=[{"id": "unit", "status": "FAILURE"}]), relay.config.Config()
    )
    assert isinstance(update, relay.translate.Update)
    assert update.report is not None
    report = update.report.with_excerpt(relay.step_log.Excerpt("step 0 (unit)", tuple(lines)))
    head = f"{update.report.details}\nLast lines of step 0 (unit):"
    assert report.details.startswith(head + "\n")
    return report, report.details[len(head) + 1 :].split("\n")


def test_the_excerpt_is_the_steps_last_lines_in_order_with_no_line_skipped_for_an_earlier_one():
    """Stopping at the first line that does not fit: a long line is never left out while lines above it are shown."""
    base, _ = _excerpt_shown(["x"])
    room = relay.report.DETAILS_MAX - len(base.details) + 2  # what the lines may take, each with its newline
    tail = ["t" * 99] * (room // 100 - 1)  # the last lines: room for one more short line, not for a long one
    lines = [f"early {n}" for n in range(5)] + ["L" * 200] + tail
    report, shown = _excerpt_shown(lines)
    assert shown == tail
    assert len(report.details) <= relay.report.DETAILS_MAX


@pytest.mark.parametrize(("spare", "fits"), [(1, True), (0, True), (-1, False)])
def test_a_line_is_shown_when_it_fits_to_the_last_character_and_not_when_it_needs_one_more(spare, fits):
    base, _ = _excerpt_shown(["x"])
    room = relay.report.DETAILS_MAX - len(base.details) + 2
    last = ["c" * 199] * (room // 200)  # each with its newline: 200
    length = room % 200 - 1 - spare  # the line above them: 1 character to spare, none, or 1 too many
    assert 0 <= length <= relay.step_log.LOG_LINE_MAX
    lines = ["a" * 150, "b" * length, *last]
    report, shown = _excerpt_shown(lines)
    assert shown == (lines[1:] if fits else last)
    assert len(report.details) == (relay.report.DETAILS_MAX - spare if fits else relay.report.DETAILS_MAX - room % 200)


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(min_value=0, max_value=relay.step_log.LOG_LINE_MAX), min_size=1, max_size=60))
def test_whatever_the_lines_lengths_the_excerpt_is_the_longest_run_of_last_lines_that_fits(lengths):
    lines = [f"{n % 10}" * length for n, length in enumerate(lengths)]
    report, shown = _excerpt_shown(lines)
    assert shown == lines[len(lines) - len(shown) :]  # the last lines, contiguous, in order
    assert len(report.details) <= relay.report.DETAILS_MAX
    if len(shown) < len(lines):  # the line before them would not have fitted
        assert len(report.details) + 1 + len(lines[-len(shown) - 1]) > relay.report.DETAILS_MAX
