from __future__ import annotations

import contextvars
import math
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from relay.errors import TransientError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)
# The Google Cloud project the current event speaks for: its topic's, else its Build's. Credentials may be
# limited to projects, and the keyring reads it here rather than through every layer between.
_project: contextvars.ContextVar[str] = contextvars.ContextVar("project", default="")


@contextmanager
def event_scope(seconds: float, project: str) -> Iterator[None]:
    """For one event: every call made, retries included, ends within `seconds`; credentials are chosen for
    `project`, the Google Cloud project the event speaks for."""
    deadline, speaks_for = _deadline.set(time.monotonic() + seconds), _project.set(project)
    try:
        yield
    finally:
        _deadline.reset(deadline)
        _project.reset(speaks_for)


def current_project() -> str:
    """The Google Cloud project the current event speaks for ("" outside an event)."""
    return _project.get()


def time_left() -> float:
    """Seconds until the current event's deadline (infinite outside an event)."""
    deadline = _deadline.get()
    return math.inf if deadline is None else deadline - time.monotonic()


def google_timeout() -> float:
    """The timeout for a Google client call: what is left of the event (60 s, the clients' own default,
    outside one)."""
    left = time_left()
    if left <= 0:
        raise TransientError("the event's deadline (EVENT_DEADLINE_SECONDS) passed before reading the credentials")
    return 60.0 if math.isinf(left) else left


def storage_call(seconds: float) -> dict[str, Any]:
    """A Cloud Storage call's timeout and retries, both within `seconds`: its client alone retries a 429 or 5xx for
    120 s whatever the call's timeout."""
    from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped,unused-ignore]

    return {"timeout": seconds, "retry": DEFAULT_RETRY.with_timeout(seconds)}


WRITES_RESERVE = 30.0  # seconds of the event's deadline kept for the report's own writes after waiting for a log
