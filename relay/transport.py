from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from relay.errors import TransientError, Unreachable, UntrustedCertificate
from relay.scope import time_left
from relay.text import as_mapping

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Self

    import requests


HTTP_RETRIES = 4
# Retried inside the call. A 429 is retried only when it carries Retry-After (urllib3 honours it): Bitbucket
# Cloud sends none, and retrying at once spends the hourly budget the next states need.
RETRY_STATUSES = frozenset({500, 502, 503, 504})


def http_session(backoff_seconds: float, attempt_seconds: float, connections: int = 10) -> requests.Session:
    """One keep-alive session: 5xx answers and dropped connections retried with backoff, and a 429 or
    503 that carries Retry-After after that wait, each only while it fits in the event's deadline."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.exceptions import MaxRetryError, ResponseError
    from urllib3.util.retry import Retry

    class DeadlineRetry(Retry):
        """urllib3's Retry, except that no wait and no attempt may end past the event's deadline."""

        def increment(
            self,
            method: str | None = None,
            url: str | None = None,
            response: Any = None,
            error: Exception | None = None,
            _pool: Any = None,
            _stacktrace: Any = None,
        ) -> Self:
            retry = super().increment(method, url, response, error, _pool, _stacktrace)
            wait = (response is not None and retry.get_retry_after(response)) or retry.get_backoff_time()
            if wait + attempt_seconds > time_left():
                raise MaxRetryError(_pool, url, error or ResponseError("no time left before the event's deadline"))
            return retry

    retry = DeadlineRetry(
        total=HTTP_RETRIES,
        backoff_factor=backoff_seconds,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST", "PUT", "DELETE"}),  # status writes are idempotent upserts
        raise_on_status=False,
    )
    session = requests.Session()
    for scheme in ("https://", "http://"):  # as many kept-alive connections as events at once
        session.mount(scheme, HTTPAdapter(max_retries=retry, pool_connections=connections, pool_maxsize=connections))
    return session


def send(
    session: requests.Session,
    method: str,
    url: str,
    timeout: tuple[float, float],
    verify: str | bool = True,
    **kwargs: Any,
) -> requests.Response:
    """Every request the function makes: TLS verified (against the CA file `verify` names, or the
    system's), ending by the event's deadline; a network failure becomes a TransientError."""
    import requests
    from urllib3.util import Timeout

    left = time_left()
    if left <= 0:
        raise TransientError(f"{method} not sent: the event's deadline (EVENT_DEADLINE_SECONDS) has passed")
    limit = Timeout(connect=min(timeout[0], left), read=min(timeout[1], left), total=min(sum(timeout), left))
    try:
        # requests hands a urllib3 Timeout to the pool as it is (HTTPAdapter.send); its stubs allow numbers only
        return session.request(method, url, verify=verify, timeout=limit, **kwargs)  # type: ignore[arg-type]
    except requests.exceptions.SSLError:
        raise UntrustedCertificate(
            f"the TLS certificate of {origin_of(url)} is not trusted, so nothing was sent; for a Bitbucket Data Center "
            'server, set "ca_certificate" in its entry of the credentials to the PEM of the CA that signed it'
        ) from None
    except requests.RequestException as error:
        message = f"{method} to {urlsplit(url).hostname} failed: {type(error).__name__}"
        if isinstance(error, requests.ConnectionError):  # refused, dropped, or timed out (after the retries)
            raise Unreachable(message, origin_of(url)) from None
        raise TransientError(message) from None


def origin_of(url: str) -> str:
    return "{0.scheme}://{0.netloc}".format(urlsplit(url))


def json_body(response: requests.Response) -> Mapping[str, Any]:
    try:
        return as_mapping(response.json())
    except ValueError:
        return {}


def token_lifetime(expires_in: Any) -> float:
    """Seconds an OAuth token lasts, as its answer's `expires_in` says: a positive number, at most a day, else an hour
    (whatever the answer holds: a boolean, a string, a number no float holds)."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)):
        return 3600.0
    if not 0 < expires_in <= 86400:  # NaN is neither
        return 86400.0 if expires_in > 86400 else 3600.0
    return float(expires_in)
