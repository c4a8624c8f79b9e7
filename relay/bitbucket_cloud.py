from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from relay.bitbucket import RemoteStatus
from relay.decoding import parse_time
from relay.report import REPORTER, report_fields
from relay.text import as_text

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from relay.annotations import Annotation
    from relay.bitbucket import Client
    from relay.report import Report
    from relay.repository import Repository
    from relay.status import CommitStatus


@dataclass
class BitbucketCloud:
    """Bitbucket Cloud's commit statuses: its paths, its body (`commitstatus`) and its answers."""

    api_url: str
    client: Client

    def body(self, status: CommitStatus) -> dict[str, str]:
        body = {
            "key": status.key,
            "state": status.state,
            "name": status.name,
            "url": status.url,
            "description": status.description,
        }
        if status.refname:
            body["refname"] = status.refname
        return body

    def read(self, repository: Repository, commit: str, key: str) -> RemoteStatus | None:
        body = self.client.read(repository, f"{self.statuses_url(repository, commit)}/{key}")
        if body is None:
            return None
        return RemoteStatus(
            state=as_text(body.get("state")),
            url=as_text(body.get("url")),
            description=as_text(body.get("description")),
            updated_on=parse_time(body.get("updated_on")),
        )

    def write(self, repository: Repository, commit: str, body: dict[str, Any]) -> None:
        self.client.write(repository, "POST", self.statuses_url(repository, commit), body)

    def report_body(self, report: Report) -> dict[str, Any]:
        result = "PASSED" if report.passed else "FAILED"
        return {**report.shared, "report_type": "TEST", "result": result, "data": report_fields(report, "text")}

    def write_report(self, repository: Repository, commit: str, report: Report) -> None:
        self.client.write(repository, "PUT", self.report_url(repository, commit, report.key), self.report_body(report))

    def read_report(self, repository: Repository, commit: str, report: Report) -> Mapping[str, Any] | None:
        return self.client.read(repository, self.report_url(repository, commit, report.key))

    def delete_report(self, repository: Repository, commit: str, report: Report) -> None:
        self.client.delete(repository, self.report_url(repository, commit, report.key))

    def annotation_body(self, annotation: Annotation) -> dict[str, Any]:
        return {
            "external_id": annotation.key,
            "annotation_type": "BUG",
            "summary": annotation.message,
            "details": f"Found by {REPORTER} ({annotation.tool})",
            "severity": annotation.site_severity,
            "result": "FAILED",
            **annotation.place(),
        }

    def write_annotations(self, repository: Repository, commit: str, report: Report) -> None:
        url = f"{self.report_url(repository, commit, report.key)}/annotations"  # at most 100 a request: one request
        self.client.write(repository, "POST", url, [self.annotation_body(a) for a in report.annotations])

    def is_private(self, repository: Repository) -> bool | None:
        body = self.client.read(repository, self.repository_url(repository))
        private = body.get("is_private") if body is not None else None
        return private if isinstance(private, bool) else None

    def commit_message(self, repository: Repository, commit: str) -> str | None:
        """The commit's message (where Jira issue keys are named); None when Bitbucket has no such commit."""
        body = self.client.read(repository, f"{self.repository_url(repository)}/commit/{commit}")
        return as_text(body.get("message")) if body is not None else None

    def page(self, repository: Repository, branch: str | None = None) -> str:
        """The repository's page (or its branch's) on bitbucket.org, as Jira links to it."""
        page = f"https://bitbucket.org/{repository.owner}/{repository.slug}"
        return f"{page}/branch/{quote(branch, safe='')}" if branch else page

    def repository_url(self, repository: Repository) -> str:
        return f"{self.api_url}/repositories/{repository.owner}/{repository.slug}"

    def report_url(self, repository: Repository, commit: str, key: str) -> str:
        return f"{self.api_url}/repositories/{repository.owner}/{repository.slug}/commit/{commit}/reports/{key}"

    def statuses_url(self, repository: Repository, commit: str) -> str:
        return f"{self.api_url}/repositories/{repository.owner}/{repository.slug}/commit/{commit}/statuses/build"
