from __future__ import annotations

import os
import threading
import weakref
from contextlib import suppress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.credentials import Credential


class CertificateFiles:
    """What TLS verification trusts for an entry's site: its own CA only, written once to a temporary
    file that requests verifies the server against; or, with no CA given, the system's. Each file is removed when
    the instance that wrote it is gone (or the interpreter exits)."""

    def __init__(self) -> None:
        self._files: dict[str, str] = {}  # CA certificate (PEM) → its file
        self._lock = threading.Lock()

    def verify(self, entry: Credential) -> str | bool:
        if entry.ca_certificate is None:
            return True
        with self._lock:
            if entry.ca_certificate not in self._files:
                import tempfile

                with tempfile.NamedTemporaryFile("w", suffix=".pem", prefix="bitbucket-ca-", delete=False) as file:
                    file.write(entry.ca_certificate)  # a public certificate, not a secret
                self._files[entry.ca_certificate] = file.name
                weakref.finalize(self, _remove_file, file.name)
            return self._files[entry.ca_certificate]


def _remove_file(path: str) -> None:
    with suppress(OSError):
        os.remove(path)
