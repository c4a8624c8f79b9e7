from __future__ import annotations

from dataclasses import dataclass


class ConfigurationError(Exception):
    """The deployment is misconfigured. Raised, so events wait for the fix."""


class InvalidMessage(Exception):
    """The message is not a Cloud Build notification. Logged and acknowledged."""


class TransientError(Exception):
    """Worth another try later. Raised, so Pub/Sub redelivers the event."""


class ConsumerRefused(TransientError):
    """Bitbucket's token endpoint refused the OAuth consumer's credentials."""


class Rejected(Exception):
    """Bitbucket refused the request and retrying cannot mend it."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status  # Bitbucket's answer (400, 403, 404, ...)


class RepositoryNotFound(Rejected):
    """Bitbucket answered 404 for the repository."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 404)


class NotServed(Exception):
    """No entry of the credentials serves the repository (any more): nothing is sent. Logged and acknowledged."""


class NotLocated(Exception):
    """Cloud Build's API gave no usable answer for a connected repository. Logged and acknowledged."""


class Unreachable(TransientError):
    """Nothing answered: the site (scheme://host:port) could not be reached, or did not answer in time."""

    def __init__(self, message: str, origin: str) -> None:
        super().__init__(message)
        self.origin = origin


class UntrustedCertificate(TransientError):
    """A server's TLS certificate is not trusted: nothing was sent. Logged as an ERROR, redelivered."""


class JiraRefused(Exception):
    """Jira refused a credential (401 after a fresh token, 403), an address, or a body (400): logged naming the entry
    and what to do (an ERROR, but for a body: a build's values), never retried."""

    def __init__(self, message: str, status: int = 0, token: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.token = token  # Atlassian refused the entry's client id and secret: the document may have changed


class RateLimited(TransientError):
    """Bitbucket answered 429 after the retries inside the call: the credential's hourly budget is spent."""


@dataclass(frozen=True)
class Skip:
    reason: str
    severity: str = "INFO"  # WARNING for a build's bad input: never ERROR, which pages whoever runs the relay
