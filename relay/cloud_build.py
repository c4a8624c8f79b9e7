from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from relay.decoding import parse_time
from relay.errors import ConfigurationError, NotLocated, TransientError
from relay.logs import log
from relay.lru import Lru
from relay.text import as_text
from relay.transport import json_body, send

if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

    import requests

    from relay.status import BuildRef


# What each question needs, named in the one WARNING an instance logs when it may not be asked.
CLOUD_BUILD_PERMISSIONS = {
    "repositories": "cloudbuild.repositories.get (roles/cloudbuild.connectionViewer on the connection). "
    "Until then a connected repository is taken to be the Bitbucket Cloud repository REPO_FULL_NAME names",
    "builds": "cloudbuild.builds.get (roles/cloudbuild.builds.viewer on the project). Until then, of two "
    "builds of one status, the one whose message was published later wins",
}


class CloudBuild:
    """Cloud Build's own API, asked with the function's Google credentials:
    - where a repository of a Cloud Build connection lives (GET /v2/{repository}, once per repository per
      instance); None when the API may not be asked (403, 404, no Google credentials): REPO_FULL_NAME then;
    - when a build was created (GET /v1/projects/{p}/locations/{r}/builds/{id}); None when it may not be
      asked, and the reporter falls back to publish times.
    408, 429, 5xx and failures to reach it are transient; any other answer about a repository raises
    NotLocated, and nothing is remembered. No lock is held while a request is on its way."""

    SCOPE = "https://www.googleapis.com/auth/cloud-platform"

    REMOTES = 1024  # connected repositories whose answer is remembered

    def __init__(self, api_url: str, timeout: tuple[float, float]) -> None:
        self.api_url = api_url
        self.timeout = timeout
        self._session: Any = None
        self.remotes = Lru(self.REMOTES)  # repository → (its remoteUri, or None: the API may not be asked)
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def remote_uri(self, repository: str) -> str | None:
        known: tuple[str | None] | None = self.remotes.get(repository)
        if known is not None:
            return known[0]
        found = self._remote_uri(repository)
        self.remotes.put(repository, (found,))
        return found

    def _remote_uri(self, repository: str) -> str | None:
        response = self._ask("repositories", repository, f"{self.api_url}/v2/{repository}")
        if response is None:
            return None
        if not response.ok:
            code = response.status_code
            raise NotLocated(f"Cloud Build's API answered {code} for the build's connected repository {repository}")
        return as_text(json_body(response).get("remoteUri")) or None

    def create_time(self, build: BuildRef) -> datetime | None:
        """When the build was created, or None when Cloud Build's API may not be asked or does not say."""
        name = f"projects/{build.project}/locations/{build.region}/builds/{build.build_id}"
        response = self._ask("builds", name, f"{self.api_url}/v1/{name}")
        return parse_time(json_body(response).get("createTime")) if response is not None and response.ok else None

    def _ask(self, topic: str, name: str, url: str) -> requests.Response | None:
        """Cloud Build's answer; None (with the instance's one WARNING) when the API may not be asked."""
        session = self.authorized()
        if session is None:
            self._fall_back(topic, name, "the function has no Google credentials")
            return None
        response = self.get(session, url)
        code = response.status_code
        if code in (408, 429) or code >= 500:
            raise TransientError(f"Cloud Build's API answered {code} for {name}")
        if code in (403, 404):
            self._fall_back(topic, name, f"answered {code}")
            return None
        return response

    def authorized(self) -> Any:
        """The session signed with the function's Google credentials; None without any (a local run)."""
        with self._lock:
            if self._session is None:
                import google.auth
                from google.auth.exceptions import DefaultCredentialsError
                from google.auth.transport.requests import AuthorizedSession

                try:
                    credentials, _ = google.auth.default(scopes=[self.SCOPE])
                except DefaultCredentialsError:
                    return None
                self._session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]  # google-auth: no hints
            return self._session

    def get(self, session: Any, url: str) -> requests.Response:
        return self.request(session, "GET", url)

    def request(self, session: Any, method: str, url: str, **kwargs: Any) -> requests.Response:
        """A request with the function's Google credentials; google-auth's own failures become ours."""
        from google.auth import exceptions

        try:
            return send(session, method, url, self.timeout, **kwargs)
        except exceptions.RefreshError as error:
            if getattr(error, "retryable", False):
                raise TransientError("the function's Google credentials could not be refreshed this time") from None
            raise ConfigurationError(
                "Google refused to refresh the function's credentials (google.auth RefreshError) for Cloud Build's API"
            ) from None
        except exceptions.GoogleAuthError as error:  # TransportError: Google's token endpoint did not answer
            raise TransientError(f"Google's token endpoint could not be reached ({type(error).__name__})") from None

    def _fall_back(self, topic: str, name: str, why: str) -> None:
        with self._lock:
            if topic in self._warned:
                return
            self._warned.add(topic)
        log(
            "WARNING",
            f"Cloud Build's API could not say about {name} ({why}): give the function's service account "
            f"{CLOUD_BUILD_PERMISSIONS[topic]}",
        )
