from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

from relay.logs import log, loggable
from relay.lru import Lru
from relay.scope import WRITES_RESERVE, current_project, storage_call, time_left

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from relay.junit import TestResults, TestSources


class TestReports:
    """A build's JUnit files, read from Cloud Storage with the function's Google credentials — only from the buckets
    TEST_REPORT_BUCKETS allows the project the event speaks for, at most TEST_FILES_MAX files, TEST_FILE_BYTES_MAX a
    file and TEST_BYTES_MAX in all, and of them at most JUNIT_BUILD_ELEMENTS_MAX elements (past a bound the counts
    say they are partial). Reading them never costs the status: any failure only leaves the counts out, or partial.
    What a build's files showed, partial or not, is kept for that build and project alone (a final message delivered
    again reads nothing), and only what a report shows of them."""

    WARNED_MAX = 256  # (project, bucket) warned about, remembered; then forgotten at once (one more WARNING each)

    def __init__(self, buckets: frozenset[tuple[str, str]]) -> None:
        self.buckets = buckets
        self._client: Any = None
        self._read = Lru(256)  # (project, sources) → (their results,)
        self.warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def read(self, sources: TestSources, directory: str = "", secrets: Iterable[str] = ()) -> TestResults | None:
        """The build's test results (their failed tests placed in `directory`, the failed step's, and `secrets`
        masked), or None when there are none to read."""
        if sources.refused:
            log("WARNING", f"Test results of this build left out: {sources.refused}; nothing is read from it")
        key = (current_project(), sources)
        known: tuple[TestResults] | None = self._read.get(key)
        if known is not None:
            return known[0]
        results = self._read_all(sources, directory, list(secrets))
        if results is not None:  # partial too: read again, they cost as much (a file that failed stays left out)
            self._read.put(key, (results,))
        return results

    def _read_all(self, sources: TestSources, directory: str, secrets: list[str]) -> TestResults | None:
        from relay.junit import (  # with the first build that names test files: no other event loads it
            TEST_BYTES_MAX,
            TEST_FILE_BYTES_MAX,
            TEST_FILES_MAX,
            ElementsRead,
            TestResults,
            manifest_files,
            parse_junit,
        )

        files: list[tuple[str, str, str]] = []
        partial = False
        try:
            if sources.folder and self._allowed(sources.folder[0]):
                files += self._listed(*sources.folder)
            if sources.manifest and self._allowed(sources.manifest[0]):
                text = self._download(sources.manifest[0], sources.manifest[1], "", TEST_FILE_BYTES_MAX)
                files += manifest_files(text.decode("utf-8", "replace"), sources.manifest) if text is not None else []
        except Exception as error:  # google.api_core errors, imported lazily; a transport failure
            self._failed(error, "listing the test report files")
            return None
        if not files:
            return None
        if len(files) > TEST_FILES_MAX:
            files, partial = files[:TEST_FILES_MAX], True
        results, read, elements = TestResults(partial=partial), 0, ElementsRead()
        for bucket, name, generation in files:
            if read >= TEST_BYTES_MAX or elements.spent() or time_left() < WRITES_RESERVE:
                return results + TestResults(partial=True)
            try:
                data = self._download(bucket, name, generation, min(TEST_FILE_BYTES_MAX, TEST_BYTES_MAX - read))
            except Exception as error:
                self._failed(error, f"reading gs://{bucket}/{loggable(name, 100)}")
                results += TestResults(partial=True)
                continue
            if data is None:  # past a bound
                results += TestResults(partial=True)
                continue
            read += len(data)
            try:
                results += parse_junit(data, directory, secrets, elements)
            except ValueError as error:
                log("WARNING", f"Skipped the test report gs://{bucket}/{loggable(name, 100)}: not a JUnit XML file "
                               f"({error})")  # fmt: skip
                results += TestResults(partial=True)
            del data
        return results

    def _allowed(self, bucket: str) -> bool:
        project = current_project()
        if ("", bucket) in self.buckets or (project, bucket) in self.buckets:
            return True
        with self._lock:
            warn = (project, bucket) not in self.warned
            if len(self.warned) >= self.WARNED_MAX:
                self.warned.clear()
            self.warned.add((project, bucket))
        if warn:
            which = f" for project {project}" if any(p for p, _ in self.buckets) else ""
            log("WARNING", f"A build names test reports in gs://{bucket}, which is not one of TEST_REPORT_BUCKETS"
                           f"{which}: nothing is read from it")  # fmt: skip
        return False

    def _listed(self, bucket: str, prefix: str) -> list[tuple[str, str, str]]:
        """The first XML objects under the prefix in name order, one more than TEST_FILES_MAX at most (so that a cut
        listing says partial): Cloud Storage lists only those, whatever else the folder holds."""
        from relay.junit import TEST_FILES_MAX

        storage = self._storage()
        blobs = storage.list_blobs(bucket, prefix=prefix, match_glob="**.xml", max_results=TEST_FILES_MAX + 1,
                                   **_within_deadline())  # fmt: skip
        return sorted((bucket, b.name, "") for b in blobs)

    def _download(self, bucket: str, name: str, generation: str, limit: int) -> bytes | None:
        """The object, or None when it is larger than `limit` (nothing past it is read)."""
        blob = self._storage().bucket(bucket).blob(name, generation=int(generation) if generation else None)
        data: bytes = blob.download_as_bytes(start=0, end=limit, **_within_deadline())
        return None if len(data) > limit else data

    def _storage(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import storage  # type: ignore[attr-defined]  # it ships no type hints

                self._client = storage.Client()
            return self._client

    def _failed(self, error: Exception, what: str) -> None:
        code = getattr(error, "code", None)
        if code == 403:
            grant = "roles/storage.objectViewer on the bucket (make deploy TEST_REPORT_BUCKETS=...)"
            log("WARNING", f"Cloud Storage refused {what} (403): give the function's service account {grant}")
        elif code != 404:
            said = f"{type(error).__name__}{f' {code}' if code else ''}"
            log("WARNING", f"Test results left out: {what} failed ({said})")


def _within_deadline() -> dict[str, Any]:
    """A read's timeout and retries: Cloud Storage's client retries a 429 or 5xx for 120 s whatever a call's timeout;
    here only while the event keeps WRITES_RESERVE for the status and report (60 s outside an event)."""
    left = time_left()
    return storage_call(60.0 if math.isinf(left) else max(left - WRITES_RESERVE, 1.0))
