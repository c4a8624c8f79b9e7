from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


class Meaning(NamedTuple):
    """What one Cloud Build status means on Bitbucket, and on Jira."""

    state: str  # Bitbucket Cloud's name: INPROGRESS, SUCCESSFUL, FAILED or STOPPED
    text: str  # how the description begins
    phase: int  # how far along the build is: a status is never moved back to a lower phase
    took: str = ""  # "in" or "after": a finished build's duration follows the text
    detail: bool = False  # failureInfo's detail (or statusDetail) follows
    jira: str = "unknown"  # a build's and a deployment's state on Jira


FINAL = 3  # the phase of every final state
STATUS_MAP = {
    "PENDING": Meaning("INPROGRESS", "Awaiting approval", 0, jira="pending"),
    "QUEUED": Meaning("INPROGRESS", "Queued", 1, jira="pending"),
    "WORKING": Meaning("INPROGRESS", "Running", 2, jira="in_progress"),
    "SUCCESS": Meaning("SUCCESSFUL", "Succeeded", FINAL, "in", jira="successful"),
    "FAILURE": Meaning("FAILED", "Failed", FINAL, "after", detail=True, jira="failed"),
    "INTERNAL_ERROR": Meaning("FAILED", "Cloud Build internal error", FINAL, "after", detail=True, jira="failed"),
    "TIMEOUT": Meaning("FAILED", "Timed out", FINAL, "after", detail=True, jira="failed"),
    "CANCELLED": Meaning("STOPPED", "Cancelled", FINAL, jira="cancelled"),
    "EXPIRED": Meaning("STOPPED", "Expired in queue", FINAL, jira="cancelled"),
}
FINAL_STATES = frozenset(m.state for m in STATUS_MAP.values() if m.phase == FINAL)


def meaning_of(build: Mapping[str, Any]) -> Meaning | None:
    """What the build's status means on Bitbucket; None for a status of no Bitbucket state."""
    status = build.get("status")
    return STATUS_MAP.get(status) if isinstance(status, str) else None


IN_PROGRESS = tuple(m for m in STATUS_MAP.values() if m.phase < FINAL)


def phase(state: str, description: str) -> int:
    """How far along the build a shown status is: its in-progress description's phase, FINAL for a final
    state, -1 for a description that is none of ours (any state of ours advances over it)."""
    if state in FINAL_STATES:
        return FINAL
    return next((m.phase for m in IN_PROGRESS if description.startswith(m.text)), -1)
