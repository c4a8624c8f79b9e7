from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay.annotations import SUMMARY_MAX, Annotation, merged, repository_path
from relay.masking import (
    KEY_BLOCK_BEGIN_RE,
    KEY_BLOCK_END_RE,
    KEY_BLOCK_LINES,
    KEY_MATERIAL_RE,
    MASK_WINDOW,
    known_secrets,
    mask,
    mask_pieces,
    windowed,
)
from relay.states import meaning_of
from relay.status import steps_of
from relay.text import as_mapping, as_text, clip, plain

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any


LOG_LINE_MAX = 200  # a log line as a report shows it
RAW_WINDOW = 4096  # of a log line, what is cleaned at all (escape codes may fill much of it)
LOG_LINES_SCANNED = 1000  # of the failed step's last lines, read and searched for errors
BUILD_ID_RE = r"(?a)[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
FAILED_STEP_RE = r"(?i)\bbuild step (\d{1,4})\b"  # failureInfo's detail names the step
STEP_PREFIX_RE = r'Step #\d{1,4}(?: - "[^"\n]*")?: '  # a line of the log file names its step
ANSI_RE = r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])"


@dataclass(frozen=True)
class FailedStep:
    """The step whose lines tell why a build failed, as Cloud Logging labels them."""

    build_id: str
    index: int  # Cloud Build's "Step #N"
    step_id: str
    directory: str  # the step's `dir`, where its relative paths start (relative to /workspace)

    @property
    def label(self) -> str:
        """Its lines' `labels.build_step`: `Step #N - "id"`, or `Step #N` for a step without an id."""
        return f'Step #{self.index} - "{self.step_id}"' if self.step_id else f"Step #{self.index}"


def failed_step(build: Mapping[str, Any]) -> FailedStep | str | None:
    """The step of a failed build whose log a report shows; a reason when its log cannot be read; None for a build
    that did not fail in a step."""
    meaning = meaning_of(build)
    if meaning is None or meaning.state != "FAILED" or not re.fullmatch(BUILD_ID_RE, as_text(build.get("id"))):
        return None
    steps = [s if isinstance(s, dict) else {} for s in build.get("steps") or ()] if isinstance(
        build.get("steps"), list
    ) else []  # fmt: skip
    index = steps_of(build).failed_index
    if index < 0 and (named := re.search(FAILED_STEP_RE, as_text(as_mapping(build.get("failureInfo")).get("detail")))):
        index = int(named[1])
    if not 0 <= index < len(steps):
        return None
    logging = as_text(as_mapping(build.get("options")).get("logging"))
    if logging == "NONE":
        return "the build's logging is NONE"
    if logging == "GCS_ONLY":
        return "the build writes its log only to its logs bucket (options.logging GCS_ONLY)"
    step_id, directory = as_text(steps[index].get("id")), as_text(steps[index].get("dir"))
    if not (step_id.isprintable() and directory.isprintable()):
        return "the failed step's id is not plain text"
    return FailedStep(as_text(build["id"]), index, step_id, directory)


def log_filter(project: str, step: FailedStep) -> str:
    """Cloud Logging's filter for the step's lines and Cloud Build's own (MAIN: its last line says the log is
    complete); every value quoted, so none can change the query."""
    return (
        f'logName={quoted(f"projects/{project}/logs/cloudbuild")} AND resource.type="build" '
        f"AND resource.labels.build_id={quoted(step.build_id)} "
        f'AND (labels.build_step={quoted(step.label)} OR labels.build_step="MAIN")'
    )


def quoted(text: str) -> str:
    """A string in Cloud Logging's query language."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def clean_lines(lines: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    """Log lines as they may leave Google Cloud: each cut to its first RAW_WINDOW characters, terminal escape
    sequences and control and format characters removed (a tab is spaces), cut to MASK_WINDOW (a word a cut falls
    in dropped: it could be a part of a secret), private key blocks removed, the function's own credentials (a part
    of one where it begins or ends a line: a secret split across two) and anything shaped like a credential masked,
    clipped to LOG_LINE_MAX."""
    known = known_secrets(secrets)
    texts = [_printable(raw) for raw in lines]
    cleaned: list[str] = []
    hidden = 0  # the lines after this one that a private key block hides
    for index, text in enumerate(texts):
        if hidden or re.search(KEY_BLOCK_BEGIN_RE, text):
            hidden = hidden - 1 if hidden else _key_block(texts, index)
            if not cleaned or cleaned[-1] != "[private key removed]":
                cleaned.append("[private key removed]")
            continue
        cleaned.append(clip(mask(mask_pieces(windowed(text, MASK_WINDOW), known), known).rstrip(), LOG_LINE_MAX))
    return cleaned


def _printable(raw: str) -> str:
    text = re.sub(ANSI_RE, "", windowed(raw, RAW_WINDOW)).replace("\t", "    ")
    return text if text.isprintable() else "".join(c for c in text if c.isprintable())


def _key_block(texts: Sequence[str], begin: int) -> int:
    """How many lines after a private key's BEGIN line its block hides: to its END line (within KEY_BLOCK_LINES), or,
    for a block that never ends, while the lines carry key material, whatever precedes it on each."""
    if re.search(KEY_BLOCK_END_RE, texts[begin]):
        return 0
    following = texts[begin + 1 : begin + 1 + KEY_BLOCK_LINES]
    end = next((n for n, text in enumerate(following) if re.search(KEY_BLOCK_END_RE, text)), None)
    if end is not None:
        return end + 1
    return next((n for n, text in enumerate(following) if not re.search(KEY_MATERIAL_RE, text)), len(following))


@dataclass(frozen=True)
class Matcher:
    """One tool's error lines: `pattern` names a file, line (and column), severity and message on one line (its
    groups path, line, column, severity, message, code); `before` or `after`, when set, fill what it lacks from
    the nearest line above or below that they match (Rust and Terraform name the error above its location, a
    Python traceback below), short of a line that `stop` matches (where another failure's lines begin)."""

    tool: str
    pattern: str  # compiled by `re` on first use, and cached
    before: str | None = None
    after: str | None = None
    stop: str | None = None
    needs_context: bool = True  # a location without its `before` or `after` line is not an error of this tool
    names_file_alone: bool = False  # a file named without a directory cannot be placed (go test: its package's)


PATH = r"(?P<path>(?:file://)?[^\s:()\[\]\"'`]+)"
LINE_COLUMN = r"(?P<line>\d+)(?::(?P<column>\d+))?"
# One row per tool, the first that matches a line wins. Each row's format comes from the tool's real output (where
# this machine runs the tool) or its documentation: tests/data/logs/README.md says which, and test_log_lines.py
# proves each row on those lines.
MATCHERS = (
    Matcher("pytest", (rf"^{PATH[:-1]}\.py):(?P<line>\d+): (?P<message>[A-Za-z_][\w.]*)$"),
            before=(r"^E\s+(?P<message>(?:[\w.]*(?:Error|Exception|Failed)\b|assert\b).*)$"), needs_context=False,
            stop=r"^_{3,} \S.* _{3,}$"),  # each failure's section begins `____ test_name ____`
    Matcher("pytest summary", (rf"^(?:FAILED|ERROR) {PATH[:-1]}\.py)::(?P<test>\S+)(?: - (?P<message>.+))?$")),
    Matcher("Python traceback", (r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)'),
            after=(r"^(?P<message>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b.*)$")),
    Matcher("tsc", (rf"^{PATH}\((?P<line>\d+),(?P<column>\d+)\): (?P<severity>error|warning) "
                      r"(?P<code>TS\d+): (?P<message>.+)$")),
    Matcher("ESLint (unix)", (rf"^{PATH}:{LINE_COLUMN}: (?P<message>.+?) \[(?P<severity>Error|Warning)"
                                r"(?:/(?P<code>[^\]]+))?\]$")),
    Matcher("ESLint (stylish)", (r"^\s+(?P<line>\d+):(?P<column>\d+)\s+(?P<severity>error|warning)\s+"
                                   r"(?P<message>.+?)(?:\s{2,}(?P<code>[\w@/-]+))?$"),
            before=(r"^(?P<path>/?[\w.@-][^\s:]*\.[cm]?[jt]sx?)$")),
    Matcher("go test", (rf"^\s+{PATH[:-1]}_test\.go):(?P<line>\d+): (?P<message>.+)$"), names_file_alone=True),
    Matcher("rustc and cargo", (rf"^\s*--> {PATH}:{LINE_COLUMN}$"),
            before=(r"^(?P<severity>error|warning)(?:\[(?P<code>E\d+)\])?: (?P<message>.+)$")),
    Matcher("Maven", (rf"^\[(?P<severity>ERROR|WARNING)\] {PATH[:-1]}\.(?:java|kt|scala|groovy)):"
                        r"\[(?P<line>\d+),(?P<column>\d+)\] (?P<message>.+)$")),
    Matcher("Kotlin (Gradle)", (rf"^(?P<severity>e|w): {PATH[:-1]}\.kts?):(?P<line>\d+):(?P<column>\d+) "
                                  r"(?P<message>.+)$")),
    Matcher("Jest", (rf"^\s+at (?:[^()]*? \()?{PATH[:-1]}\.[cm]?[jt]sx?):(?P<line>\d+):(?P<column>\d+)\)?$"),
            before=(r"^\s*\u25cf (?P<message>.+)$")),
    Matcher("Terraform", (r"^(?:\u2502 )?\s*on (?P<path>[^\s]+\.tf(?:\.json)?) line (?P<line>\d+)"),
            before=(r"^(?:\u2502 )?(?P<severity>Error|Warning): (?P<message>.+)$")),
    # GCC, Clang, javac, go vet and go build, mypy, and any tool that writes `path:line:col: error: message`
    Matcher("compiler (path:line:col)", (rf"^{PATH}:{LINE_COLUMN}: (?:(?P<severity>fatal error|error|warning"
                                           r"|note)(?:\[[^\]]*\])?: )?(?P<message>\S.*)$")),
)  # fmt: skip
SEVERITIES = {"error": "error", "fatal error": "error", "e": "error", "warning": "warning", "w": "warning"}
NEARBY = 40  # how far above or below a location its message may be


def annotations_from(lines: Sequence[str], directory: str) -> tuple[Annotation, ...]:
    """The errors the matchers find in a failed step's (cleaned) lines, on the repository's paths: one per file and
    line, a file's own only where none of its lines has one, errors first, at most ANNOTATIONS_MAX."""
    found = []
    for index, text in enumerate(lines):
        match, matcher = next(((m, row) for row in MATCHERS if (m := re.search(row.pattern, text))), (None, None))
        if match is not None and matcher is not None:
            found.append(_annotation(matcher, match, lines, index, directory))
    return merged(a for a in found if a is not None)


def _annotation(
    matcher: Matcher, match: re.Match[str], lines: Sequence[str], index: int, directory: str
) -> Annotation | None:
    fields = {k: v for k, v in match.groupdict().items() if v}
    for pattern, nearby in ((matcher.before, reversed(lines[max(0, index - NEARBY) : index])),
                            (matcher.after, lines[index + 1 : index + 1 + NEARBY])):  # fmt: skip
        if pattern is None:
            continue
        own = itertools.takewhile(lambda line: matcher.stop is None or not re.search(matcher.stop, line), nearby)
        near = next((m for m in (re.search(pattern, line) for line in own) if m), None)
        if near is None and matcher.needs_context:
            return None
        if near is not None:
            fields.update({k: v for k, v in near.groupdict().items() if v})  # the context says it more fully
    severity = SEVERITIES.get(fields.get("severity", "error").lower())
    if matcher.names_file_alone and "/" not in fields["path"]:  # said in the message, placed nowhere
        fields["message"] = f"{fields.pop('path')}:{fields.pop('line')}: {fields.get('message', '')}"
    path = repository_path(fields["path"], directory) if "path" in fields else None
    if severity is None or ("path" in fields and path is None):
        return None  # a note, or a file outside the repository
    line = int(fields["line"]) if fields.get("line", "0").isdigit() and int(fields.get("line", "0")) > 0 else None
    message = fields.get("message") or fields.get("code") or "error"
    if fields.get("test"):
        message = f"{fields['test']}: {message}"
    if fields.get("code") and fields["code"] not in message:
        message = f"{message} ({fields['code']})"
    return Annotation(path, line, severity, clip(plain(message), SUMMARY_MAX), matcher.tool)


@dataclass(frozen=True)
class Excerpt:
    """What a report shows of a failed step's log: its last lines, the errors found in them, or why there are
    none."""

    step: str = ""  # the step, as a reviewer reads it
    lines: tuple[str, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    note: str = ""  # "the log may be incomplete ...", "no log excerpt: ..."


def excerpt_of(step: FailedStep, lines: Sequence[str], complete: bool, shown: int, secrets: Iterable[str]) -> Excerpt:
    cleaned = clean_lines(lines[-LOG_LINES_SCANNED:], secrets)
    name = f"step {step.index} ({step.step_id})" if step.step_id else f"step {step.index}"
    note = "" if complete else "the log may be incomplete: Cloud Build's last line was not in Cloud Logging yet"
    if not cleaned:
        note = f"Cloud Logging had no line of {name}{'' if complete else ' yet'}"
    return Excerpt(name, tuple(cleaned[-shown:] if shown > 0 else ()), annotations_from(cleaned, step.directory), note)
