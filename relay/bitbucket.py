from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from relay.errors import RateLimited, Rejected, RepositoryNotFound, TransientError
from relay.masking import UNMISTAKABLE_MIN, known_secrets, scrubbed
from relay.text import as_mapping, as_text, clip
from relay.transport import json_body, send

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime
    from typing import Any

    import requests

    from relay.budget import Budget
    from relay.certificates import CertificateFiles
    from relay.credentials import Credential, Keyring
    from relay.report import Report
    from relay.repository import Repository
    from relay.status import CommitStatus


class RemoteStatus(NamedTuple):
    """A status as Bitbucket shows it."""

    state: str  # Cloud's name
    url: str
    description: str
    updated_on: datetime | None


@dataclass
class Client:
    """Calls to Bitbucket signed with the credential that serves the repository: one 401 reads the
    credentials again and repeats the call; what is left of a failure after urllib3's retries is
    raised as TransientError (RateLimited for 429) or Rejected. A 404 means no such repository to a
    write, and no such status (or repository) to a read."""

    keyring: Keyring
    budget: Budget
    certificates: CertificateFiles
    session: requests.Session
    timeout: Any

    def read(self, repository: Repository, url: str, params: Any = None) -> Mapping[str, Any] | None:
        """The JSON body Bitbucket answers, or None for 404."""
        response = self._call(repository, "GET", url, params=params)
        return None if response.status_code == 404 else json_body(response)

    def write(self, repository: Repository, method: str, url: str, body: Any) -> None:
        response = self._call(repository, method, url, body=body)
        if response.status_code == 404:
            raise RepositoryNotFound(f"Bitbucket answered 404: {bitbucket_error(response)}")

    def delete(self, repository: Repository, url: str) -> None:
        """Nothing there to delete (404) is as good as deleted."""
        self._call(repository, "DELETE", url)

    def _call(self, repository: Repository, method: str, url: str, body: Any = None, params: Any = None) -> Any:
        entry, header = self.keyring.sign(repository)
        response = self.send_as(entry, method, url, body, params, header)
        if response.status_code == 401:
            # The credential may have been rotated since this instance read it.
            entry, header = self.keyring.sign(repository, refused=header)
            response = self.send_as(entry, method, url, body, params, header)
        self.budget.note(entry, response.headers)
        if response.ok or response.status_code == 404:
            return response
        message = f"Bitbucket answered {response.status_code} to {method}: {bitbucket_error(response)}"
        if response.status_code == 401:
            raise TransientError(f"{message} (credentials refused after fetching them again)")
        if response.status_code == 429:
            raise RateLimited(f"{message} (credential entry {entry.position})")
        if response.status_code >= 500:
            raise TransientError(message)
        raise Rejected(message, response.status_code)

    def answer(self, repository: Repository, url: str) -> tuple[Credential, int]:
        """The entry serving the repository and Bitbucket's answer to its GET of `url` (a 401 read again once, as
        every call is): what `make doctor` asks of each repository."""
        entry, header = self.keyring.sign(repository)
        response = self.send_as(entry, "GET", url, None, None, header)
        if response.status_code == 401:
            entry, header = self.keyring.sign(repository, refused=header)
            response = self.send_as(entry, "GET", url, None, None, header)
        return entry, response.status_code

    def send_as(self, entry: Credential, method: str, url: str, body: Any, params: Any, header: str) -> Any:
        headers = {"Authorization": header, "Accept": "application/json"}
        verify = self.certificates.verify(entry)
        own = known_secrets(self.keyring.secret_values())
        body = scrubbed(body, [s for s in own if len(s) >= UNMISTAKABLE_MIN])  # whatever field a credential reached
        return send(self.session, method, url, self.timeout, verify, json=body, params=params, headers=headers)


def bitbucket_error(response: requests.Response) -> str:
    """Bitbucket's own words from an error body (Cloud's `error`, Data Center's `errors`), or the reason phrase."""
    body = json_body(response)
    errors = body.get("errors")
    error = as_mapping(body.get("error")) or (as_mapping(errors[0]) if isinstance(errors, list) and errors else {})
    message = as_text(error.get("message")) or response.reason or "no error message"
    fields = as_mapping(error.get("fields"))
    if fields:
        message += " (" + "; ".join(f"{k}: {v}" for k, v in fields.items()) + ")"
    return clip(message, 500)


class Site(Protocol):
    """What the reporter needs of a site; signing, retries and never-backwards are written once above."""

    def body(self, status: CommitStatus) -> dict[str, Any]: ...
    def read(self, repository: Repository, commit: str, key: str) -> RemoteStatus | None: ...
    def write(self, repository: Repository, commit: str, body: dict[str, Any]) -> None: ...
    def write_report(self, repository: Repository, commit: str, report: Report) -> None: ...
    def delete_report(self, repository: Repository, commit: str, report: Report) -> None: ...
    def read_report(self, repository: Repository, commit: str, report: Report) -> Mapping[str, Any] | None: ...
    def write_annotations(self, repository: Repository, commit: str, report: Report) -> None: ...
    def is_private(self, repository: Repository) -> bool | None: ...
    def repository_url(self, repository: Repository) -> str: ...
    def commit_message(self, repository: Repository, commit: str) -> str | None: ...
    def page(self, repository: Repository, branch: str | None = None) -> str: ...
