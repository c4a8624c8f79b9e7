from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from relay.masking import masked
from relay.text import SHOWN_MAX, clip, plain

if TYPE_CHECKING:
    from typing import Any


REPORTED_ERROR = "type.googleapis.com/google.devtools.clouderrorreporting.v1beta1.ReportedErrorEvent"


def log(severity: str, message: str, **fields: Any) -> None:
    """One structured log line for Cloud Logging. An ERROR carries what Error Reporting needs to group it (its
    @type, and the function's name and revision as serviceContext), so its notifications work without setup."""
    entry: dict[str, Any] = {"severity": severity, "message": message}
    if severity == "ERROR":
        service = {"service": os.environ.get("K_SERVICE") or "bitbucket-build-status",
                   "version": os.environ.get("K_REVISION") or "local"}  # fmt: skip
        entry.update({"@type": REPORTED_ERROR, "serviceContext": service})
    entry.update({k: v for k, v in fields.items() if v is not None})
    # ASCII only: no raw line separator (U+2028, NEL) from a build can split the entry.
    sys.stdout.write(json.dumps(entry, default=str) + "\n")
    sys.stdout.flush()


def loggable(text: str, limit: int = SHOWN_MAX) -> str:
    """A value from a build as a log line (and resync's output) may show it: without user info (everything up to
    the last '@', so a password holding '/' or '?' goes too), query, fragment or ';parameters' (where access tokens
    ride), cut to its window (without the word the cut falls in), credential shapes masked, made plain and clipped.
    The one way any build value reaches a log; its cost is linear in the value's length whatever the value holds."""
    scheme, separator, rest = text.partition("://")
    if not (separator and 0 < len(scheme) <= 16 and all(c.isascii() and (c.isalnum() or c in "+-.") for c in scheme)):
        scheme, rest = "", text
    rest = rest.rpartition("@")[2]
    for mark in "?#;":
        rest = rest.partition(mark)[0]
    shown = f"{scheme}://{rest}" if scheme else rest
    return clip(plain(masked(shown, ())), limit)
