from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from relay.annotations import ANNOTATIONS_MAX, SUMMARY_MAX, Annotation, merged, repository_path
from relay.decoding import substitutions
from relay.logs import loggable
from relay.masking import known_secrets, masked
from relay.report import DETAILS_MAX, FIELD_MAX, LINE_MAX
from relay.states import FINAL, meaning_of
from relay.status import DESCRIPTION_MAX
from relay.step_log import BUILD_ID_RE
from relay.text import as_mapping, as_text, clip, plain

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence
    from typing import Any

    from relay.translate import Update


TEST_REPORTS_SUBSTITUTION = "_BITBUCKET_TEST_REPORTS"
GCS_URL_RE = r"gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])/(?P<name>[^#\s]*+)(?:#(?P<generation>\d{1,20}))?"
TEST_FILES_MAX = 50
TEST_FILE_BYTES_MAX = 5 * 1024 * 1024
TEST_BYTES_MAX = 20 * 1024 * 1024
FAILED_TESTS_SHOWN = 5  # in the report's details
JUNIT_DEPTH_MAX = 1000  # elements open at once in a JUnit file (its suites nest a few levels): each is held
JUNIT_NAMES_MAX = 1000  # distinct element, attribute and namespace names in a file (JUnit's dialects use a few dozen)
JUNIT_CHUNK = 64 * 1024  # what the parser is given at a time
JUNIT_BATCH = 1024  # ended elements taken out of their parent at once (one at a time moves all after it, each time)
# Elements (and namespace declarations) read, of a file and of a build's files in all; past either the counts are
# partial. Each costs 2 to 5 µs of processor time, holding the GIL (20 MB of <a/> took 12 s): 150,000 at most 0.75 s.
# A 5 MB file of pytest's passing tests holds about 69,000 (75 bytes each).
JUNIT_FILE_ELEMENTS_MAX = 100_000
JUNIT_BUILD_ELEMENTS_MAX = 150_000
JUNIT_ATTRIBUTES_MAX = 1000  # in one start tag: the parser holds each as two strings and a dict entry (~25x its bytes)
JUNIT_LONG_TAG_RE = r"<[^\s<>!?/][^<>]{65535,}+"  # a start tag of 64 KB or more: its attributes counted
JUNIT_ATTRIBUTE_RE = r"[\"']\s++[^\s=<>\"']++\s*+=\s*+[\"']"  # an attribute after another's value
FAILURE_TEXT_SCANNED = 16 * 1024  # of a failure's text (up to 5 MB), the first and the last characters searched
TEST_TEXT_MASKED = 4 * FIELD_MAX  # of a test's name or message, what is masked before it is clipped to FIELD_MAX
# A place in a failure's text: a path that starts where a word starts (so a long word is tried once, not from each
# of its characters) and is taken whole (possessive), then a line number of at most 9 digits.
FAILURE_PLACE_RE = r"(?<![^\s:\"'()\[\]])(?P<path>[^\s:\"'()\[\]]++):(?P<line>\d{1,9})(?!\d)"


@dataclass(frozen=True)
class TestSources:
    """Where a build's JUnit files are, as far as the rule lets a build name them: a folder of its own (whose path
    holds the build's id) and, for a passing build, Cloud Build's artifact manifest for it (artifacts-<id>.json)."""

    build_id: str
    folder: tuple[str, str] | None = None  # (bucket, prefix) of _BITBUCKET_TEST_REPORTS
    manifest: tuple[str, str] | None = None  # (bucket, object) of results.artifactManifest
    refused: str = ""  # why a place the build names is not read


def test_sources(build: Mapping[str, Any]) -> TestSources | None:
    """The build's test report files' places, or None for a build that names none (or is not finished). A build
    reads only what is its own: a folder whose path holds its id as a whole segment (gs://BUCKET/PREFIX/$BUILD_ID/),
    and the manifest Cloud Build wrote for it; which buckets a project's builds may name is the deployment's."""
    meaning = meaning_of(build)
    build_id = as_text(build.get("id"))
    if meaning is None or meaning.phase != FINAL or not re.fullmatch(BUILD_ID_RE, build_id):
        return None
    named = re.fullmatch(GCS_URL_RE, as_text(substitutions(build).get(TEST_REPORTS_SUBSTITUTION)))
    manifest = re.fullmatch(GCS_URL_RE, as_text(as_mapping(build.get("results")).get("artifactManifest")))
    folder, listed, refused = None, None, []
    if named:
        prefix = named["name"] + ("/" if named["name"].rpartition("/")[2] == build_id else "")
        if build_id in prefix.split("/")[:-1]:
            folder = (named["bucket"], prefix)
        else:
            refused.append(f"{TEST_REPORTS_SUBSTITUTION} must name a folder of the build's own, whose path holds its "
                           "id (gs://BUCKET/PREFIX/$BUILD_ID/)")  # fmt: skip
    # Cloud Build uploads artifacts, and writes their manifest, only when every step succeeded
    if manifest and meaning.state == "SUCCESSFUL":
        if manifest["name"].rpartition("/")[2] == f"artifacts-{build_id}.json":
            listed = (manifest["bucket"], manifest["name"])
        else:
            refused.append("its artifact manifest is not the one Cloud Build writes for it (artifacts-$BUILD_ID.json)")
    if not (folder or listed or refused):
        return None
    return TestSources(build_id, folder, listed, "; ".join(refused))


def manifest_files(text: str, manifest: tuple[str, str]) -> list[tuple[str, str, str]]:
    """The (bucket, object, generation) of the XML files an artifact manifest lists (one JSON object a line): only
    what Cloud Build uploaded beside it (its bucket, under its folder), each at the generation the line names; at
    most one more than TEST_FILES_MAX."""
    bucket, name = manifest
    folder = name.rpartition("/")[0] + "/" if "/" in name else ""
    found: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        try:
            location = as_text(as_mapping(json.loads(line)).get("location"))
        except (ValueError, RecursionError):
            continue
        place = re.fullmatch(GCS_URL_RE, location)
        if place and place["bucket"] == bucket and place["name"].startswith(folder) and place["generation"]:
            found += [(bucket, place["name"], place["generation"])] if place["name"].endswith(".xml") else []
        if len(found) > TEST_FILES_MAX:
            break
    return found


@dataclass(frozen=True)
class FailedTest:
    """A failed test as a report shows it: its name (classname.name) and message, plain, masked and clipped, and
    the place of its annotation (no path: the report's own)."""

    name: str
    message: str
    path: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class TestResults:
    """What a report shows of a build's JUnit files, and no more: the counts, and of the failed tests the first
    FAILED_TESTS_SHOWN (its details) and the first at each other place (its annotations, at most ANNOTATIONS_MAX)."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: tuple[FailedTest, ...] = ()
    partial: bool = False  # a bound was reached, or a file could not be read

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped

    def __add__(self, other: TestResults) -> TestResults:
        return TestResults(self.passed + other.passed, self.failed + other.failed, self.skipped + other.skipped,
                           kept_failures(self.failures + other.failures), self.partial or other.partial)  # fmt: skip

    def counts(self) -> str:
        """'2 of 215 tests failed', '213 tests passed (2 skipped)', '(partial)' when a bound was reached."""
        if self.failed:
            said = f"{self.failed} of {self.total} tests failed"
        else:
            said = f"{self.passed} tests passed" + (f" ({self.skipped} skipped)" if self.skipped else "")
        return said + (" (partial)" if self.partial else "")


def kept_failures(failures: Iterable[FailedTest]) -> tuple[FailedTest, ...]:
    """Of failed tests in order, those a report shows: the first FAILED_TESTS_SHOWN, then each at a place none
    before it has (a report's own annotation is each its own), at most ANNOTATIONS_MAX."""
    kept: list[FailedTest] = []
    places: set[tuple[str, int | None]] = set()
    for test in failures:
        if len(kept) >= ANNOTATIONS_MAX:
            break
        if _shows(test.path, test.line, len(kept), places):
            kept.append(test)
    return tuple(kept)


def _shows(path: str | None, line: int | None, kept: int, places: set[tuple[str, int | None]]) -> bool:
    """Whether a failed test at (path, line) is shown after `kept` others at `places` (which it joins)."""
    if path is not None:
        if kept >= FAILED_TESTS_SHOWN and (path, line) in places:
            return False
        places.add((path, line))
    return True


@dataclass
class ElementsRead:
    """Elements (and namespace declarations) read of a build's JUnit files so far: each costs processor time, so at
    most JUNIT_FILE_ELEMENTS_MAX of a file and JUNIT_BUILD_ELEMENTS_MAX of a build's files are read."""

    count: int = 0

    def spent(self) -> bool:
        return self.count >= JUNIT_BUILD_ELEMENTS_MAX


def parse_junit(
    data: bytes, directory: str = "", secrets: Iterable[str] = (), elements: ElementsRead | None = None
) -> TestResults:
    """One JUnit XML file (pytest xunit1 and xunit2, Maven Surefire and Failsafe, gotestsum, jest-junit; a
    <testsuites> root or a bare <testsuite>): its counts and what a report shows of its failed tests, placed in the
    repository (`directory`: the failed step's) with the function's own credentials (`secrets`) and anything shaped
    like a credential masked. Parsed with defusedxml, one test case at a time (junitparser reads each), so entity
    declarations and external entities are refused and a file costs a bounded multiple of its size; only its first
    JUNIT_FILE_ELEMENTS_MAX elements (and namespace declarations), and only while the build's `elements` are not
    spent, are read (past them the counts are partial). ValueError for a file that is not JUnit or not well-formed."""
    from junitparser import Error, Failure, TestCase

    known = known_secrets(secrets)
    passed = failed = skipped = 0
    kept: list[FailedTest] = []
    places: set[tuple[str, int | None]] = set()
    for element in _junit_cases(data, ElementsRead() if elements is None else elements):
        if element is None:  # a bound: what was read is counted, nothing after it
            return TestResults(passed, failed, skipped, tuple(kept), partial=True)
        outcome = element[0].tag if len(element) else ""  # its <failure> or <error> first, else its <skipped>
        if outcome in ("", "skipped"):
            skipped, passed = (skipped + 1, passed) if outcome else (skipped, passed + 1)
            continue
        failed += 1
        if len(kept) >= ANNOTATIONS_MAX:
            continue
        case = TestCase.fromelem(element)  # type: ignore[no-untyped-call]  # junitparser ships no hints
        failure = next(r for r in case.result if isinstance(r, (Failure, Error)))
        text = failure.text or ""
        path, line = failure_place(text, directory) or (None, None)
        if path is None and (file := element.get("file")) and (path := repository_path(file, directory)):
            line = _line_attribute(element.get("line"))  # pytest's xunit1: 0-based, the test function's `def`
        if _shows(path, line, len(kept), places):
            name = ".".join(p for p in (case.classname, case.name) if p)
            message = _failure_message(failure.message or "", text)
            kept.append(FailedTest(_shown_text(name, known), _shown_text(message, known), path, line))
    return TestResults(passed, failed, skipped, tuple(kept))


def _junit_cases(data: bytes, elements: ElementsRead) -> Iterator[Any | None]:
    """Each <testcase> of a JUnit file that junitparser counts (a child of a <testsuite> within the root), as it ends;
    dropped after. Only the open elements are held, and within a test case only its first <failure> or <error> and
    its first <skipped> (all that junitparser's result is read for). Each element and namespace declaration is
    counted in `elements`: None, and nothing more, once JUNIT_FILE_ELEMENTS_MAX of the file's are, or
    JUNIT_BUILD_ELEMENTS_MAX of the build's. ValueError for a file that is not JUnit, not well-formed, nested deeper
    than JUNIT_DEPTH_MAX or with a start tag of more than JUNIT_ATTRIBUTES_MAX attributes."""
    import xml.etree.ElementTree

    import defusedxml.ElementTree
    from defusedxml import DefusedXmlException

    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:
        raise ValueError("it is UTF-16 (only files in UTF-8 or another 8-bit encoding are read)")
    syntax = data.decode("latin-1")  # each byte a character: the markup as expat reads it
    for tag in re.finditer(JUNIT_LONG_TAG_RE, syntax):  # rare: only there can attributes be many
        attributes = re.compile(JUNIT_ATTRIBUTE_RE).finditer(syntax, tag.start(), tag.end())
        if next(itertools.islice(attributes, JUNIT_ATTRIBUTES_MAX, None), None) is not None:
            raise ValueError(f"a start tag holds more than {JUNIT_ATTRIBUTES_MAX} attributes")
    del syntax
    stop = min(elements.count + JUNIT_FILE_ELEMENTS_MAX, JUNIT_BUILD_ELEMENTS_MAX)
    parser = defusedxml.ElementTree.DefusedXMLParser(target=xml.etree.ElementTree.TreeBuilder())
    # the tree keeps neither comments nor processing instructions: the builder's handlers made an element of each
    parser.parser.CommentHandler = lambda text: None
    parser.parser.ProcessingInstructionHandler = lambda target, text: None
    events = defusedxml.ElementTree.iterparse(_Chunks(data), events=("start", "end", "start-ns"), parser=parser)
    names: set[Any] = set()  # element, attribute and namespace names: expat keeps each it meets until the file's end
    opened: list[Any] = []  # the open elements, the root first
    ended = [0]  # of each, how many of its first children have ended: cleared, and taken out of it in batches
    suites = 0  # how many of them, from the root, are suites junitparser reads (the root, then <testsuite>s)
    case = -1  # where in `opened` the test case being read is
    failure = skipped = None  # its first <failure> or <error>, and its first <skipped>: what its result reads
    while True:
        try:
            item = next(events, None)
        except (DefusedXmlException, SyntaxError, ValueError) as error:  # ParseError is a SyntaxError
            raise ValueError(type(error).__name__) from None
        if item is None:
            return
        event, element = item
        if event != "end":
            if elements.count >= stop:
                yield None
                return
            elements.count += 1
        if event == "start-ns":
            names.add(element)  # (prefix, URI)
        elif event == "start":
            names.add(element.tag)
            names.update(element.attrib)
        if len(names) > JUNIT_NAMES_MAX:
            raise ValueError(f"it holds more than {JUNIT_NAMES_MAX} distinct names")
        if event == "start-ns":
            continue
        depth = len(opened)
        if event == "start":
            if depth >= JUNIT_DEPTH_MAX:
                raise ValueError(f"it nests elements more than {JUNIT_DEPTH_MAX} deep")
            if depth == 0 and element.tag not in ("testsuites", "testsuite"):
                raise ValueError(f"its root is <{loggable(str(element.tag), 40)}>, not <testsuites> or <testsuite>")
            if case >= 0:
                if failure is None and element.tag in ("failure", "error"):
                    failure = element
                elif skipped is None and element.tag == "skipped":
                    skipped = element
            elif suites == depth and (depth == 0 or element.tag == "testsuite"):
                suites += 1
            elif suites == depth and element.tag == "testcase" and opened[-1].tag == "testsuite":
                case = depth
            opened.append(element)
            ended.append(0)
            continue
        opened.pop()
        ended.pop()
        depth -= 1
        suites = min(suites, depth)
        if depth == case:
            del element[:]
            element.extend(r for r in (failure, skipped) if r is not None)
            yield element
            case, failure, skipped = -1, None, None
        if element is not failure and element is not skipped:
            element.clear()
        if depth > 0:
            ended[-1] += 1
            if ended[-1] >= JUNIT_BATCH:
                del opened[-1][: ended[-1]]
                ended[-1] = 0


class _Chunks:
    """A file's bytes as iterparse reads them, JUNIT_CHUNK at a time rather than its 16 KB: expat before 2.6 parses
    an unfinished token again from its start on every read, so a 5 MB attribute read in 16 KB reads costs seconds."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._data[self._at : self._at + JUNIT_CHUNK].tobytes()
        self._at += len(chunk)
        return chunk


def _line_attribute(raw: str | None) -> int | None:
    """A testcase's `line` (pytest's xunit1: 0-based) as a 1-based line; None unless it is a plain number."""
    return int(raw) + 1 if raw and len(raw) <= 9 and raw.isascii() and raw.isdigit() else None


def failure_place(text: str, directory: str) -> tuple[str, int] | None:
    """The last place (path:line, line above 0) in a failure's text that lies in the repository; of a long text only
    the first and last FAILURE_TEXT_SCANNED characters are searched."""
    if len(text) > 2 * FAILURE_TEXT_SCANNED:
        text = f"{text[:FAILURE_TEXT_SCANNED]}\n{text[-FAILURE_TEXT_SCANNED:]}"
    place = None
    for match in re.finditer(FAILURE_PLACE_RE, text):
        head, dot, extension = match["path"].rpartition(".")  # a file's: a letter, then up to 9 letters or digits
        named = head and dot and len(extension) <= 10 and extension[:1].isascii() and extension[:1].isalpha()
        line = int(match["line"])
        if named and all(c.isalnum() or c == "_" for c in extension) and line > 0:
            path = repository_path(match["path"], directory)
            place = (path, line) if path else place
    return place


def _failure_message(message: str, text: str) -> str:
    """A failure's own message, else (gotestsum says only "Failed") the first line of its text that says more."""
    message = message[:TEST_TEXT_MASKED].strip()
    if len(message) > len("Failed"):
        return message
    said = (line.strip() for line in text[:FAILURE_TEXT_SCANNED].splitlines())
    return next((line for line in said if line and not line.startswith(("=== ", "--- "))), message)


def _shown_text(text: str, known: Sequence[str]) -> str:
    """A test's name or message as a report may show it: plain, the function's own credentials and anything shaped
    like a credential masked, clipped (masked before it is clipped, so no credential is cut in two)."""
    return clip(plain(masked(text, known)), FIELD_MAX)


def test_annotations(results: TestResults) -> list[Annotation]:
    """One annotation per failed test a report shows: at the place found for it (the last place in its failure's
    text that is in the repository, else its file and line attributes), else on no file (the report's own)."""
    return [Annotation(t.path, t.line, "error", clip(f"{t.name}: {t.message}" if t.message else f"{t.name} failed",
                                                      SUMMARY_MAX), "JUnit") for t in results.failures]  # fmt: skip


def with_tests(update: Update, results: TestResults) -> Update:
    """The update with its test results: the counts end the status's description (on both sites) and ride on a
    server's status (testResults); the report names them and its first failed tests, and annotates them."""
    status = update.status
    head = status.description.partition(": ")[0] if results.failed else status.description
    status = replace(status, description=clip(f"{head}: {results.counts()}", DESCRIPTION_MAX),
                     tests=(results.passed, results.failed, results.skipped))  # fmt: skip
    report = update.report
    if report is not None:
        shown = [f"{t.name}: {t.message}" if t.message else t.name for t in results.failures[:FAILED_TESTS_SHOWN]]
        lines = [f"Tests: {results.counts()}", *(f"Failed test: {clip(s, LINE_MAX - 13)}" for s in shown)]
        report = replace(report, details=clip("\n".join([report.details, *lines]), DETAILS_MAX),
                         tests=results.counts(), annotations=merged(test_annotations(results)))  # fmt: skip
    return replace(update, status=status, report=report)
