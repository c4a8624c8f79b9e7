from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from relay.bitbucket import RemoteStatus
from relay.report import report_fields
from relay.text import as_mapping, as_text

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from relay.annotations import Annotation
    from relay.bitbucket import Client
    from relay.report import Report
    from relay.repository import Repository
    from relay.status import CommitStatus
    from relay.tracked import TrackedBuild


# Data Center names Cloud's STOPPED "CANCELLED".
DATA_CENTER_STATES = {
    "INPROGRESS": "INPROGRESS",
    "SUCCESSFUL": "SUCCESSFUL",
    "FAILED": "FAILED",
    "STOPPED": "CANCELLED",
}
STATES_FROM_DATA_CENTER = {server: cloud for cloud, server in DATA_CENTER_STATES.items()}


@dataclass
class BitbucketDataCenter:
    """A Bitbucket Data Center server's build statuses (the repository names the server): its paths,
    its body and its answers."""

    client: Client

    def body(self, status: CommitStatus) -> dict[str, Any]:
        body: dict[str, Any] = {
            "key": status.server_key,
            "state": DATA_CENTER_STATES[status.state],
            "name": status.name,
            "url": status.url,
            "description": status.description,
            "parent": status.parent,
        }
        if status.refname or status.tag:
            body["ref"] = f"refs/heads/{status.refname}" if status.refname else f"refs/tags/{status.tag}"
        if status.duration_ms is not None:
            body["duration"] = status.duration_ms
        if status.tests is not None:
            body["testResults"] = dict(zip(("successful", "failed", "skipped"), status.tests, strict=True))
        return body

    def read(self, repository: Repository, commit: str, key: str) -> RemoteStatus | None:
        body = self.client.read(repository, self.builds_url(repository, commit), params={"key": key})
        if body is None:
            return None
        state, updated = as_text(body.get("state")), body.get("updatedDate")
        return RemoteStatus(
            state=STATES_FROM_DATA_CENTER.get(state, state),
            url=as_text(body.get("url")),
            description=as_text(body.get("description")),
            updated_on=datetime.fromtimestamp(updated / 1000, UTC) if isinstance(updated, int) else None,
        )

    def write(self, repository: Repository, commit: str, body: dict[str, Any]) -> None:
        self.client.write(repository, "POST", self.builds_url(repository, commit), body)

    def report_body(self, report: Report) -> dict[str, Any]:
        return {
            **report.shared,
            "result": "PASS" if report.passed else "FAIL",
            "data": report_fields(report, "linktext"),
        }

    def write_report(self, repository: Repository, commit: str, report: Report) -> None:
        url = self.report_url(repository, commit, report.server_key)
        self.client.write(repository, "PUT", url, self.report_body(report))

    def read_report(self, repository: Repository, commit: str, report: Report) -> Mapping[str, Any] | None:
        return self.client.read(repository, self.report_url(repository, commit, report.server_key))

    def delete_report(self, repository: Repository, commit: str, report: Report) -> None:
        """The report and its annotations: the server keeps a replaced report's annotations."""
        self.client.delete(repository, self.report_url(repository, commit, report.server_key))

    def annotation_body(self, annotation: Annotation) -> dict[str, Any]:
        return {
            "externalId": annotation.key,
            "message": annotation.message,
            "severity": annotation.site_severity,
            "type": "BUG",
            **annotation.place(),
        }

    def write_annotations(self, repository: Repository, commit: str, report: Report) -> None:
        url = f"{self.report_url(repository, commit, report.server_key)}/annotations"
        annotations = [self.annotation_body(a) for a in report.annotations]
        self.client.write(repository, "POST", url, {"annotations": annotations})

    def is_private(self, repository: Repository) -> bool | None:
        """Private unless the repository or its project is public (a project's public repositories are)."""
        body = self.client.read(repository, self.repository_url(repository))
        if body is None or not isinstance(body.get("public"), bool):
            return None
        return not (body["public"] or as_mapping(body.get("project")).get("public") is True)

    def commit_message(self, repository: Repository, commit: str) -> str | None:
        """The commit's message (where Jira issue keys are named); None when the server has no such commit."""
        body = self.client.read(repository, f"{self.repository_url(repository)}/commits/{commit}")
        return as_text(body.get("message")) if body is not None else None

    def page(self, repository: Repository, branch: str | None = None) -> str:
        """The repository's page (or its branch's) on the server, as Jira links to it."""
        page = f"{repository.server}/projects/{repository.owner}/repos/{repository.slug}"
        return f"{page}/browse?at={quote(f'refs/heads/{branch}', safe='')}" if branch else f"{page}/browse"

    def deployment_body(self, status: CommitStatus, build: TrackedBuild) -> dict[str, Any]:
        assert build.environment is not None
        environment: dict[str, Any] = {"key": build.environment.name, "displayName": build.environment.name}
        if build.environment.type != "unmapped":  # the server has no such type
            environment["type"] = build.environment.type.upper()
        return {
            "key": status.server_key,
            "deploymentSequenceNumber": build.number,
            "environment": environment,
            "state": build.state.upper(),
            "url": status.url,
            "displayName": build.name,
            "description": build.description,
        }

    def write_deployment(self, repository: Repository, commit: str, status: CommitStatus, build: TrackedBuild) -> None:
        """The build's deployment to its environment, shown on the commit and its pull requests (7.16+)."""
        url = f"{self.repository_url(repository)}/commits/{commit}/deployments"
        self.client.write(repository, "POST", url, self.deployment_body(status, build))

    def report_url(self, repository: Repository, commit: str, key: str) -> str:
        project, slug = repository.owner, repository.slug
        return (
            f"{repository.server}/rest/insights/latest/projects/{project}/repos/{slug}/commits/{commit}/reports/{key}"
        )

    def repository_url(self, repository: Repository) -> str:
        return f"{repository.server}/rest/api/latest/projects/{repository.owner}/repos/{repository.slug}"

    def builds_url(self, repository: Repository, commit: str) -> str:
        project, slug = repository.owner, repository.slug
        return f"{repository.server}/rest/api/latest/projects/{project}/repos/{slug}/commits/{commit}/builds"
