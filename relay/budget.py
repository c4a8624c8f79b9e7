from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from relay.logs import log
from relay.text import clip

if TYPE_CHECKING:
    from collections.abc import Mapping

    from relay.credentials import Credential


class Budget:
    """Each credential's hourly budget: once Bitbucket says it is nearly spent (X-RateLimit-NearLimit),
    only final states are posted with that credential for the cooldown. Kept per credential value, so a
    rotated token starts afresh."""

    def __init__(self, cooldown: float) -> None:
        self.cooldown = cooldown
        self._spent_until: dict[str, float] = {}  # credential secret → end of its cooldown (time.monotonic())
        self._lock = threading.Lock()

    def nearly_spent(self, entry: Credential | None) -> bool:
        return entry is not None and self._spent_until.get(entry.secret, 0.0) > time.monotonic()

    def spare(self, entry: Credential | None) -> bool:
        """Whether the credential may spend a call beyond what a build's status and report need (a report's
        annotations, a repository's visibility): these give way first."""
        return not self.nearly_spent(entry)

    def note(self, entry: Credential, headers: Mapping[str, str]) -> None:
        """Bitbucket's X-RateLimit-* headers of a response to `entry`'s credential."""
        if headers.get("X-RateLimit-NearLimit", "").lower() != "true":
            return
        with self._lock:
            if self.nearly_spent(entry):
                return
            self._spent_until[entry.secret] = time.monotonic() + self.cooldown
        limit = clip(headers.get("X-RateLimit-Limit", "not given"), 20)
        log(
            "WARNING",
            f"Bitbucket says the hourly budget of credential entry {entry.position} is nearly spent "
            f"(X-RateLimit-Limit {limit}): only final states are posted with it for {self.cooldown:.0f} s",
            credential=entry.position,
        )
