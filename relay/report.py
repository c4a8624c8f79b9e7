from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from relay.decoding import substituted_secrets, trigger_name
from relay.masking import masked
from relay.status import DEFAULT_NAME, SERVER_KEY_MAX, hashed_key, steps_of
from relay.text import as_mapping, as_text, clip, plain

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from relay.annotations import Annotation
    from relay.status import CommitStatus, Steps
    from relay.step_log import Excerpt, FailedStep


REPORT_PREFIX = "cloud-build-"  # a report's key: never one of another tool's
REPORTER = "Google Cloud Build"
TITLE_MAX = 450  # Data Center's limit; Cloud's is not documented
DETAILS_MAX = 2000  # Data Center's limit
FIELD_MAX = 250  # a data field's text
LINE_MAX = 200  # a line of a report's details
WARNINGS_SHOWN = 3


@dataclass(frozen=True)
class Report:
    """A finished build's Code Insights report, in the terms both sites share; each site makes its body."""

    key: str  # cloud-build-<the status's key> (Cloud)
    server_key: str  # cloud-build-<the status's Data Center key>: what a required report names
    title: str
    details: str
    passed: bool
    link: str
    duration_ms: int | None
    steps: Steps
    trigger: str
    warnings: int
    log: FailedStep | str | None = None  # the failed step whose lines it may show, or why none can be read
    annotations: tuple[Annotation, ...] = ()
    tests: str = ""  # its test results' counts, when read
    masks: tuple[str, ...] = field(default=(), repr=False)  # the build's own secrets: masked in its lines

    def with_excerpt(self, excerpt: Excerpt) -> Report:
        """The report with the failed step's last lines ending its details (within DETAILS_MAX: the last lines
        win) and the errors found in them as its annotations."""
        from relay.annotations import merged  # a failed build's: no other event loads it

        annotations = merged(self.annotations, excerpt.annotations)
        if not excerpt.lines:
            note = f"\nNo log excerpt: {excerpt.note}" if excerpt.note else ""
            return replace(self, details=clip(self.details + note, DETAILS_MAX), annotations=annotations)
        said = f" ({excerpt.note})" if excerpt.note else ""
        head = f"{self.details}\nLast lines of {excerpt.step}{said}:"
        room, tail = DETAILS_MAX - len(head), []
        for line in reversed(excerpt.lines):
            if room < len(line) + 1:
                break
            tail.append(line)
            room -= len(line) + 1
        details = "\n".join([clip(head, DETAILS_MAX), *reversed(tail)])
        return replace(self, details=details, annotations=annotations)

    @property
    def shared(self) -> dict[str, str]:
        """The fields both sites spell alike."""
        return {"title": self.title, "details": self.details, "reporter": REPORTER, "link": self.link}


def report_of(build: Mapping[str, Any], status: CommitStatus, known: Sequence[str] = ()) -> Report:
    """What a reviewer reads first about a finished build: the outcome and duration, the step that failed
    and why, what the steps did, the warnings, the trigger, the link to the log; clipped, one line each, the `known`
    secrets (known_secrets()) masked."""
    from relay.step_log import failed_step  # a final state's: an event in progress loads no log reader

    steps = steps_of(build, known)
    failure = as_mapping(build.get("failureInfo"))
    cause = masked(as_text(failure.get("detail")) or as_text(build.get("statusDetail")), known)
    warnings = [w for w in build.get("warnings") or () if isinstance(w, dict)] if isinstance(
        build.get("warnings"), list
    ) else []  # fmt: skip
    lines = [status.description]
    if steps.failed_step:
        lines.append(f"Failed step: {steps.failed_step}")
    if cause and status.state == "FAILED":
        kind = as_text(failure.get("type")).replace("_", " ").lower()
        lines.append(f"Cause{f' ({kind})' if kind else ''}: {cause}")
    if steps.total:
        counts = [f"{steps.passed} passed", f"{steps.failed} failed", f"{steps.allowed} allowed to fail",
                  f"{steps.not_run} did not run"]  # fmt: skip
        lines.append(f"Steps: {steps.total} ({', '.join(c for c in counts if not c.startswith('0 '))})")
    for warning in warnings[:WARNINGS_SHOWN]:
        lines.append(f"Warning: {clip(plain(masked(as_text(warning.get('text')), known)), FIELD_MAX)}")
    if len(warnings) > WARNINGS_SHOWN:
        lines.append(f"and {len(warnings) - WARNINGS_SHOWN} more warnings")
    trigger = trigger_name(build)
    if trigger:
        lines.append(f"Trigger: {trigger}")
    details = "\n".join(clip(plain(line), LINE_MAX) for line in lines)  # 9 lines at most: within DETAILS_MAX
    return Report(
        key=f"{REPORT_PREFIX}{status.key}",
        server_key=REPORT_PREFIX + hashed_key(status.server_key, SERVER_KEY_MAX - len(REPORT_PREFIX)),
        title=clip(plain(f"{trigger or DEFAULT_NAME}: {status.description}"), TITLE_MAX),
        details=clip(details, DETAILS_MAX),
        passed=status.state == "SUCCESSFUL",
        link=status.url,
        duration_ms=status.duration_ms,
        steps=steps,
        trigger=clip(plain(trigger), FIELD_MAX),
        warnings=len(warnings),
        log=failed_step(build),
        masks=substituted_secrets(build),
    )


REPORT_FIELDS_MAX = 6  # Data Center's limit (Cloud's is 10): the last fields give way


def report_fields(report: Report, link_text: str) -> list[dict[str, Any]]:
    """The data fields a reviewer scans first, at most REPORT_FIELDS_MAX (with test results, the steps' count or
    the warnings give way); the sites name a link's text differently (`link_text`)."""
    fields: list[dict[str, Any]] = []
    if report.duration_ms is not None:
        fields.append({"title": "Duration", "type": "DURATION", "value": report.duration_ms})
    if report.steps.failed_step:
        fields.append({"title": "Failed step", "type": "TEXT", "value": clip(report.steps.failed_step, FIELD_MAX)})
    if report.tests:
        fields.append({"title": "Tests", "type": "TEXT", "value": report.tests})
    if report.steps.total:
        fields.append(
            {"title": "Steps passed", "type": "TEXT", "value": f"{report.steps.passed} of {report.steps.total}"}
        )
    if report.trigger:
        fields.append({"title": "Trigger", "type": "TEXT", "value": report.trigger})
    fields.append({"title": "Build log", "type": "LINK", "value": {link_text: "Cloud Build log", "href": report.link}})
    if report.warnings:
        fields.append({"title": "Warnings", "type": "NUMBER", "value": report.warnings})
    return fields[:REPORT_FIELDS_MAX]
