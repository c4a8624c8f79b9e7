from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay.decoding import parse_time, substituted_secrets, trigger_name
from relay.errors import Skip
from relay.logs import loggable
from relay.masking import known_secrets
from relay.report import report_of
from relay.repository import allowed, locate
from relay.states import FINAL, meaning_of
from relay.status import (
    DEFAULT_NAME,
    KEY_MAX,
    NAME_MAX,
    PARENT_MAX,
    SERVER_KEY_MAX,
    CommitStatus,
    build_url,
    describe,
    duration_ms,
    status_key,
)
from relay.text import as_text, clip, plain

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime
    from typing import Any

    from relay.config import Config
    from relay.report import Report
    from relay.repository import Target


@dataclass(frozen=True)
class Update:
    """One build's state, ready to post."""

    build_id: str
    target: Target
    status: CommitStatus
    created: datetime | None = None  # the build's createTime: of two builds of one status, the later one wins
    report: Report | None = None  # with a final state, its Code Insights report


def translate(build: Mapping[str, Any], config: Config, secrets: Sequence[str] = ()) -> Update | Skip:
    """Decide what a Build means for Bitbucket; no I/O. The function's own credentials (`secrets`) and the build's
    secret substitutions are masked in every text it shows, before the text is clipped."""
    meaning = meaning_of(build)
    if meaning is None:
        return Skip(f"build status {loggable(as_text(build.get('status')), 40)!r} has no Bitbucket state", "WARNING")
    target = locate(build)
    if isinstance(target, Skip):
        return target
    if not target.connected:  # a connected repository is checked once Cloud Build's API has said which it is
        target = allowed(target, config)
        if isinstance(target, Skip):
            return target
    server_key = status_key(build, SERVER_KEY_MAX)
    known = known_secrets([*secrets, *substituted_secrets(build)])
    status = CommitStatus(
        key=status_key(build, KEY_MAX),
        state=meaning.state,
        name=clip(plain(trigger_name(build)) or DEFAULT_NAME, NAME_MAX),
        url=build_url(build),
        description=describe(build, known),
        refname=target.branch,
        server_key=server_key,
        tag=target.tag,
        parent=clip(plain(trigger_name(build)), PARENT_MAX) or server_key,
        duration_ms=duration_ms(build) if meaning.phase == FINAL else None,
    )
    report = report_of(build, status, known) if config.code_insights and status.is_final else None
    return Update(build["id"], target, status, parse_time(build.get("createTime")), report)
