"""Cloud Build's record: the builds created since SINCE in each location, listed page by page, bounded."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

if TYPE_CHECKING:
    pass

import relay.bitbucket
import relay.budget
import relay.cloud_build
import relay.config
import relay.credentials
import relay.decoding
import relay.errors
import relay.event
import relay.jira
import relay.reporting
import relay.repository
import relay.text
import relay.tracked
import relay.translate
import relay.transport
import relay.warm

# and besides, when the build may be told to Jira, the read of its commit's message (the issues it names), and when it
# deploys, its deployment on a Data Center commit
PAGE_SIZE = 100
# The most builds one listing gives a run (a dry run over 100,000 listed builds peaks at 427 MiB, docs/performance.md),
# and so the most pages: a listing that has not ended by then is stopped as one that never would.
LISTED_MAX = 100_000
PAGES_MAX = LISTED_MAX // PAGE_SIZE
AGO_RE = re.compile(r"(?P<count>\d{1,5})(?P<unit>[mhd])", re.ASCII)
UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class UsageError(Exception):
    """The command line asks for something resync cannot do."""


class ListingError(Exception):
    """Cloud Build's listing cannot be followed to its end (a page token repeated, or no end after PAGES_MAX pages)."""


def since_time(text: str, now: datetime) -> datetime:
    """SINCE: an age (90m, 24h, 7d) or an RFC 3339 time (a date alone is its midnight, UTC)."""
    if match := AGO_RE.fullmatch(text.strip()):
        return now - timedelta(**{UNITS[match["unit"]]: int(match["count"])})
    parsed = relay.decoding.parse_time(text)
    if parsed is None:
        raise UsageError(f"SINCE={text!r} is neither an age (90m, 24h, 7d) nor a time (2026-11-28T09:00:00Z)")
    return parsed


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def builds_since(
    cloud_build: relay.cloud_build.CloudBuild, project: str, locations: list[str], since: datetime
) -> Iterator[dict[str, Any]]:
    """Every build created at or after `since` in those locations, as the pages arrive, each once."""
    seen: set[str] = set()
    for location in locations:
        for build in _listed(cloud_build, project, location, since):
            if (build_id := relay.text.as_text(build.get("id"))) not in seen:
                seen.add(build_id)
                yield build


def _listed(
    cloud_build: relay.cloud_build.CloudBuild, project: str, location: str, since: datetime
) -> Iterator[dict[str, Any]]:
    session = cloud_build.authorized()
    if session is None:
        raise relay.errors.ConfigurationError(
            "no Google credentials: run `gcloud auth application-default login` (resync uses them to list builds)"
        )
    where = f"projects/{project}/locations/{location}"
    query = {"filter": f'create_time>="{rfc3339(since)}"', "pageSize": PAGE_SIZE}
    tokens: set[str] = set()
    for _ in range(PAGES_MAX):
        response = cloud_build.get(session, f"{cloud_build.api_url}/v1/{where}/builds?{urlencode(query)}")
        if response.status_code in (401, 403):
            raise relay.errors.ConfigurationError(
                f"Cloud Build's API answered {response.status_code} to listing the builds of {where}: "
                "you need cloudbuild.builds.list (roles/cloudbuild.builds.viewer)"
            )
        if not response.ok:
            raise relay.errors.TransientError(f"Cloud Build's API answered {response.status_code} to listing {where}")
        page = relay.transport.json_body(response)
        yield from (b for b in page.get("builds") or [] if isinstance(b, dict) and relay.text.as_text(b.get("id")))
        token = relay.text.as_text(page.get("nextPageToken"))
        if not token:
            return
        if token in tokens:
            raise ListingError(
                f"Cloud Build's listing of the builds of {where} gave a page token it had given before, so it would "
                f"never end: stopped after {len(tokens) + 1} pages"
            )
        tokens.add(token)
        query["pageToken"] = token
    raise ListingError(
        f"Cloud Build's listing of the builds of {where} had not ended after {PAGES_MAX:,} pages ({LISTED_MAX:,} "
        "builds, the most a run lists of one location): stopped; resync a shorter period (a later SINCE)"
    )
