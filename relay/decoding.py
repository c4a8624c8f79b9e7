from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from relay.errors import InvalidMessage
from relay.masking import MASK_WINDOW, SECRET_MIN, SECRET_WORDS, SUBSTITUTED_MAX
from relay.text import as_mapping, as_text

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


BUILD_DEPTH_MAX = 32  # how deep a Build may nest (Cloud Build's go about six levels down): deeper is not one


def decode_build(data: Any) -> dict[str, Any]:
    """base64 → JSON → Build, or InvalidMessage saying why not."""
    if not data:
        raise InvalidMessage("the message has no data")
    if not isinstance(data, (str, bytes)):
        raise InvalidMessage(f"the message data is a {type(data).__name__}, not base64 text")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMessage("the message data is not valid base64") from None
    try:
        build = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise InvalidMessage("the message data is not JSON") from None
    except RecursionError:
        raise InvalidMessage(f"the message data is nested deeper than {BUILD_DEPTH_MAX} levels") from None
    if not isinstance(build, dict):
        raise InvalidMessage(f"the message data is a JSON {type(build).__name__}, not a Build object")
    if _depth(build) > BUILD_DEPTH_MAX:
        raise InvalidMessage(f"the message data is nested deeper than {BUILD_DEPTH_MAX} levels")
    for name in ("id", "status"):
        if not isinstance(build.get(name), str) or not build[name]:
            raise InvalidMessage(f"the Build has no {name!r}")
    return build


def _depth(value: Any) -> int:
    """How deep a JSON value nests (a Build's deepest field is a few levels down), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= BUILD_DEPTH_MAX:  # deeper than that is refused: no need to look further
                stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


# What the function reads of a Build, and of each of its steps: a resync holds only these of each listed build.
BUILD_FIELDS = frozenset(
    {"id", "projectId", "status", "statusDetail", "failureInfo", "buildTriggerId", "logUrl", "createTime",
     "startTime", "finishTime", "substitutions", "source", "sourceProvenance", "steps", "warnings", "approval",
     "options", "results"}
)  # fmt: skip
STEP_FIELDS = frozenset({"id", "name", "entrypoint", "status", "exitCode", "allowFailure", "dir"})
RESULTS_FIELDS = frozenset({"artifactManifest"})  # where a passing build's artifacts (its JUnit files) are listed


def essentials(build: Mapping[str, Any]) -> dict[str, Any]:
    """The Build with only what the function reads of it: the same status and report come of it."""
    kept = {name: value for name, value in build.items() if name in BUILD_FIELDS}
    if isinstance(kept.get("steps"), list):
        kept["steps"] = [_essential_step(step) for step in kept["steps"]]
    if isinstance(results := kept.get("results"), dict):  # not its images, step outputs and timings
        kept["results"] = {name: value for name, value in results.items() if name in RESULTS_FIELDS}
    return kept


def _essential_step(step: Any) -> Any:
    if not isinstance(step, dict):
        return step
    kept = {name: value for name, value in step.items() if name in STEP_FIELDS}
    if isinstance(args := step.get("args"), list):  # what of the command is masked (MASK_WINDOW), then shown
        kept["args"], length = [], 0
        for arg in (a for a in args if isinstance(a, str)):
            if length > MASK_WINDOW:
                break
            kept["args"].append(arg[: MASK_WINDOW + 1 - length])
            length += len(arg) + 1
    return kept


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as Cloud Build and Pub/Sub write it ('Z' or 'z', up to 9 fraction digits), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().upper())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def substitutions(build: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_mapping(build.get("substitutions"))


def trigger_name(build: Mapping[str, Any]) -> str:
    return as_text(substitutions(build).get("TRIGGER_NAME"))


def substituted_secrets(build: Mapping[str, Any]) -> tuple[str, ...]:
    """The values of the build's substitutions whose names say they are secrets (_API_TOKEN, _DB_PASSWORD): Cloud
    Build expands them into a step's args, so they are masked wherever the build's text is shown (the first
    SUBSTITUTED_MAX: each is looked for in every text shown)."""
    named = (v for k, v in substitutions(build).items() if isinstance(v, str) and re.search(SECRET_WORDS, str(k)))
    return tuple(itertools.islice((v for v in named if len(v) >= SECRET_MIN), SUBSTITUTED_MAX))
