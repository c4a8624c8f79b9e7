"""Local stand-ins for the services the function talks to.

Every secret a stand-in accepts or issues is remembered in SEEN_SECRETS, so the
test session can prove that none of them was ever printed (tests/conftest.py).
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from typing import Any

SEEN_SECRETS: set[str] = set()
LOGS: list[str] = []  # output of child processes (functions-framework), scanned like test output


def remember_secret(*values: str) -> None:
    for value in values:
        if value and len(value) >= 8:
            SEEN_SECRETS.add(value)


def remember_basic(user: str, password: str) -> None:
    remember_secret(password, base64.b64encode(f"{user}:{password}".encode()).decode())


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
