from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


SHOWN_MAX = 200  # how much of a value from a build a log line shows


def plain(text: str) -> str:
    """Text from a build with every control or format character (newline, bidi, zero-width) made a space."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def clip(text: str, limit: int = SHOWN_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def as_text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""
