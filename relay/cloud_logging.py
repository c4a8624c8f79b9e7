from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

from relay.config import PROJECT_ID_RE
from relay.errors import ConfigurationError, TransientError
from relay.logs import log
from relay.scope import WRITES_RESERVE, time_left
from relay.text import as_mapping, as_text

if TYPE_CHECKING:
    from typing import Any

    from relay.cloud_build import CloudBuild
    from relay.step_log import FailedStep


class LogUnavailable(Exception):
    """The failed step's lines cannot be read this time: the report goes without them, saying why."""


LOG_READS = 3  # a log not complete yet is read again, twice at most
LOG_RESPONSE_MAX = 8 << 20  # bytes of one answer of Cloud Logging (a thousand lines of 8 KB)
LOGGING_ROLE = (
    "roles/logging.viewAccessor on the log view LOG_VIEW of the project's _Default bucket (make deploy creates it "
    "and grants it), or roles/logging.viewer on the project"
)


class CloudLogging:
    """A failed step's last lines, read from Cloud Logging (entries.list) with the function's Google credentials,
    through the log view LOG_VIEW when one is set, else the project's logs."""

    def __init__(self, api_url: str, google: CloudBuild, view: str, wait: float) -> None:
        self.api_url = api_url
        self.google = google
        self.view = view
        self.wait = wait
        self._warned = False

    def step_lines(self, project: str, step: FailedStep) -> tuple[list[str], bool]:
        """The step's lines, oldest first (its last LOG_LINES_SCANNED), and whether the log is complete (Cloud
        Build's last line is in): a log that is not is read again within LOG_WAIT_SECONDS."""
        from relay.step_log import LOG_LINES_SCANNED, log_filter  # a failed build's: no other event loads it

        if not re.fullmatch(PROJECT_ID_RE, project):
            raise LogUnavailable("the build's project is not a project ID")
        resource = f"projects/{project}/locations/global/buckets/_Default/views/{self.view}" if self.view else (
            f"projects/{project}"
        )  # fmt: skip
        body = {"resourceNames": [resource], "filter": log_filter(project, step), "orderBy": "timestamp desc",
                "pageSize": LOG_LINES_SCANNED}  # fmt: skip
        waits = [self.wait / 3, self.wait * 2 / 3]
        while True:
            lines, complete = self._read(body, step)
            if complete or not waits or time_left() - waits[0] <= WRITES_RESERVE:  # the read again takes time too
                return lines, complete
            time.sleep(waits.pop(0))

    def _read(self, body: dict[str, Any], step: FailedStep) -> tuple[list[str], bool]:
        from relay.step_log import STEP_PREFIX_RE

        session = self.google.authorized()
        if session is None:
            raise LogUnavailable("the function has no Google credentials")
        url = f"{self.api_url}/v2/entries:list"
        try:
            response = self.google.request(session, "POST", url, json=body, stream=True)
            with response:  # a step's lines may be 256 KB each: what is read is bounded, whatever is sent
                raw = response.raw.read(LOG_RESPONSE_MAX + 1, decode_content=True)
        except (TransientError, ConfigurationError) as error:
            raise LogUnavailable(f"Cloud Logging could not be asked ({error})") from None
        except OSError as error:  # the answer broke off while it was read
            raise LogUnavailable(f"Cloud Logging's answer could not be read ({type(error).__name__})") from None
        code = response.status_code
        if code in (401, 403, 404):
            self._warn(code)
            raise LogUnavailable(f"the function may not read the build's log (Cloud Logging answered {code})")
        if code == 429:
            raise LogUnavailable("Cloud Logging's read quota is spent for now (429)")
        if not response.ok:
            raise LogUnavailable(f"Cloud Logging answered {code}")
        if len(raw) > LOG_RESPONSE_MAX:
            raise LogUnavailable(f"the step's last lines are too long to read (over {LOG_RESPONSE_MAX >> 20} MB)")
        try:
            answer = as_mapping(json.loads(raw))
        except ValueError:
            answer = {}
        entries = [e for e in answer.get("entries") or () if isinstance(e, dict)]
        lines, complete = [], False
        for entry in reversed(entries):  # asked newest first: the last lines of a long log
            text, label = as_text(entry.get("textPayload")), as_mapping(entry.get("labels")).get("build_step")
            if label == "MAIN":
                complete = complete or text in ("DONE", "ERROR", "TIMEOUT") or text.startswith("ERROR:")
            elif label == step.label:
                lines.append(re.sub(STEP_PREFIX_RE, "", _text_raw(entry.get("textPayload")), count=1))
        return lines, complete

    def _warn(self, code: int) -> None:
        if not self._warned:
            self._warned = True
            log("WARNING", f"Cloud Logging answered {code} to reading a failed step's log: reports go without its "
                           f"lines until the function's service account has {LOGGING_ROLE}")  # fmt: skip


def _text_raw(value: Any) -> str:
    """A log line as written (its indentation kept), or "" for none."""
    return value.rstrip("\n") if isinstance(value, str) else ""
