"""Local stand-ins for the services the function talks to.

Every secret a stand-in accepts or issues is remembered in SEEN_SECRETS, so the
test session can prove that none of them was ever printed (tests/conftest.py).
"""

from __future__ import annotations

import base64
import contextlib
import re
import secrets
import socket
import threading
from typing import Any

SEEN_SECRETS: set[str] = set()
LOGS: list[str] = []  # output of child processes (functions-framework), scanned like test output

SECRET_LENGTH, SECRET_RANDOM = 20, 16
_RUN = re.compile(r"[A-Za-z0-9]+")
_WORD = re.compile(r"[a-z]+|[A-Z][a-z]*|[A-Z]+|[0-9]+")


def unmistakable(value: str) -> bool:
    """Whether a credential is one that no prose, path or log line can hold by chance: at least SECRET_LENGTH
    characters, of which at least SECRET_RANDOM are in runs of letters and digits that are not words (a word: a
    run of lower-case letters, of upper-case letters, a capitalised word, or a number). `someone-else`,
    `webapp-repository-token-1` and `leaked-token-0123456789` are only words; a value of `secrets.token_urlsafe`
    (18 bytes or more) almost always passes, and new_secret() draws again when one does not."""
    random_part = sum(len(run) for run in _RUN.findall(value) if not _WORD.fullmatch(run))
    return len(value) >= SECRET_LENGTH and random_part >= SECRET_RANDOM


def remember_secret(*values: str) -> None:
    """Remember credentials that must never be printed: the session's guard (tests/conftest.py) finds each of them
    anywhere in any output, so a credential that prose could hold would fail a correct run. Raises ValueError
    for a value that is not unmistakable(), before remembering any: make it with new_secret() or write the
    output of `python -c "import secrets; print(secrets.token_urlsafe(18))"` as a constant."""
    refused = [value for value in values if not unmistakable(value)]
    if refused:
        raise ValueError(
            f"A test credential must be unmistakable (at least {SECRET_LENGTH} characters, {SECRET_RANDOM} of them "
            f"random letters and digits), so that the secret guard cannot match prose: {refused!r}"
        )
    SEEN_SECRETS.update(values)


def new_secret() -> str:
    """A fresh credential a stand-in issues (an OAuth or Google access token), remembered."""
    while not unmistakable(value := secrets.token_urlsafe(24)):
        pass
    remember_secret(value)
    return value


def remember_basic(user: str, password: str) -> None:
    """A password and the Basic header made of it (as random as the password)."""
    remember_secret(password)
    SEEN_SECRETS.add(base64.b64encode(f"{user}:{password}".encode()).decode())


def shut_down(server: Any) -> None:
    """Stop a socketserver's serve_forever at once: a connection wakes its loop, which would otherwise
    notice the request to stop only at the end of its poll interval."""
    stopping = threading.Thread(target=server.shutdown)
    stopping.start()
    while stopping.is_alive():
        with contextlib.suppress(OSError):
            socket.create_connection(server.server_address[:2], timeout=0.5).close()
        stopping.join(0.002)
    server.server_close()
