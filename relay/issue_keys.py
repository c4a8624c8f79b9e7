"""Which Jira issues a build implements: the issue keys in its branch, in its commit's message and in its
_JIRA_ISSUES substitution (pure)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from relay.decoding import substitutions
from relay.text import as_text

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

ISSUES_SUBSTITUTION = "_JIRA_ISSUES"
ISSUE_KEYS_MAX = 100  # Jira's limit for one build or deployment
TEXT_READ = 4096  # of a commit's message or _JIRA_ISSUES, what is searched for keys
# Jira's key shape: a project key (a letter, then letters, digits or '_': 2 to 255 characters, as Jira takes them) and a
# number, standing alone, not inside a word ("utf8-2x" holds none). Upper case anywhere (as Jira reads smart commits,
# so prose such as "sha-256" names none); in a branch and in _JIRA_ISSUES also a lower-case one of letters alone where
# a segment begins (feature/abc-123-login names ABC-123), never before a dot (renovate/node-18.x names none).
KEY_RE = r"(?<![A-Za-z0-9_])[A-Z][A-Z0-9_]{1,254}-[0-9]{1,100}(?![A-Za-z0-9])"
ANY_CASE_KEY_RE = rf"{KEY_RE}|(?<![^/\s,])[A-Za-z]{{2,255}}-[0-9]{{1,100}}(?![A-Za-z0-9.])"


def named_keys(build: Mapping[str, Any], branch: str | None) -> tuple[str, ...]:
    """The keys the build names without asking Bitbucket: its branch's, then its _JIRA_ISSUES' (spaces or commas)."""
    named = _read(as_text(substitutions(build).get(ISSUES_SUBSTITUTION)))
    return issue_keys(re.findall(ANY_CASE_KEY_RE, branch or ""), re.findall(ANY_CASE_KEY_RE, named))


def message_keys(message: str) -> list[str]:
    """The keys a commit's message names (upper case only)."""
    return re.findall(KEY_RE, _read(message))


def issue_keys(*found: Iterable[str]) -> tuple[str, ...]:
    """Keys found, upper-cased, each once, in the order found, at most ISSUE_KEYS_MAX."""
    keys: dict[str, None] = {}
    for key in (k.upper() for group in found for k in group):
        if len(keys) >= ISSUE_KEYS_MAX:
            break
        keys.setdefault(key, None)
    return tuple(keys)


def _read(text: str) -> str:
    """The first TEXT_READ characters of a text, without the word the cut falls in (it may be part of a key)."""
    return text if len(text) <= TEXT_READ else text[:TEXT_READ].rpartition(" ")[0]
