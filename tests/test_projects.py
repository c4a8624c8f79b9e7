"""Many Google Cloud projects through one relay: a delivery speaks for the project of the topic it was
published to, never for the project its Build claims; the deployment serves only the projects it lists; and
a credential limited to projects serves only their builds, so no team can write another team's statuses."""

from __future__ import annotations

import json

import pytest

import main
import relay.config
import relay.credentials
import relay.errors
import relay.event
import relay.repository
from standins.builds import COMMIT, Context, background_event, build
from tests.conftest import log_lines, remember_stored

TEAM_A, TEAM_B = "team-a-token-Tiw4K0vwtWY3V5vQyuTqYguK", "team-b-token-B1ioFclurNRU-VxDZN8HyoHG"
DOCUMENT = [
    {"token": TEAM_A, "projects": ["team-a"], "repositories": ["acme/a-*"]},
    {"token": TEAM_B, "projects": ["team-b"], "repositories": ["acme/b-*"]},
]


def delivered(b: dict, project: str) -> None:
    """As the runtime delivers a message published to `project`'s cloud-builds topic."""
    context = Context()
    context.resource = {"service": "pubsub.googleapis.com", "name": f"projects/{project}/topics/cloud-builds"}
    main.build_status(background_event(b), context)


def team_build(project: str, repo: str, build_id: str = "b-1") -> dict:
    b = build("SUCCESS", build_id, repo=repo)
    b["projectId"] = b["substitutions"]["PROJECT_ID"] = project
    return b


@pytest.fixture
def two_teams(bitbucket, monkeypatch):
    bitbucket.app.revoke_all()
    bitbucket.app.accept_token(TEAM_A, {"acme/a-web"})
    bitbucket.app.accept_token(TEAM_B, {"acme/b-web"})
    remember_stored(DOCUMENT)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(DOCUMENT))
    monkeypatch.setenv("BUILD_PROJECTS", "team-a team-b")
    return bitbucket


def test_each_teams_builds_land_with_its_own_credential(two_teams):
    delivered(team_build("team-a", "acme/a-web"), "team-a")
    delivered(team_build("team-b", "acme/b-web"), "team-b")
    assert [s["state"] for s in two_teams.app.shown("acme", "a-web", COMMIT)] == ["SUCCESSFUL"]
    assert [s["state"] for s in two_teams.app.shown("acme", "b-web", COMMIT)] == ["SUCCESSFUL"]


def test_a_build_in_team_as_topic_claiming_team_bs_project_writes_nothing(two_teams, capsys):
    delivered(team_build("team-b", "acme/b-web"), "team-a")
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING"
    assert line["message"] == (
        "Refused: the build claims project 'team-b' but was published to project 'team-a''s topic, so nothing is sent"
    )
    assert two_teams.app.calls == []


def test_a_build_of_team_a_naming_team_bs_repository_writes_nothing(two_teams, capsys):
    delivered(team_build("team-a", "acme/b-web"), "team-a")
    [line] = log_lines(capsys.readouterr().out)
    assert line["message"] == "Skipped: no entry of the credentials serves repository acme/b-web, so nothing is sent"
    assert two_teams.app.calls == []


def test_a_project_the_deployment_does_not_serve_writes_nothing(two_teams, capsys):
    delivered(team_build("team-c", "acme/a-web"), "team-c")
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING"
    assert line["message"] == "Refused: project 'team-c' is not one this deployment serves (BUILD_PROJECTS)"
    assert two_teams.app.calls == []


def without_topic(b: dict) -> None:
    """As a delivery that names no topic arrives: a local run, or a push to the function's root."""
    context = Context()
    context.resource = None
    main.build_status(background_event(b), context)


def test_a_delivery_that_names_no_topic_keeps_the_builds_project_when_any_project_is_served(two_teams, monkeypatch):
    """A local run (no topic named, no BUILD_PROJECTS): the Build's project chooses the credential."""
    monkeypatch.delenv("BUILD_PROJECTS")
    without_topic(team_build("team-a", "acme/a-web"))
    assert [s["state"] for s in two_teams.app.shown("acme", "a-web", COMMIT)] == ["SUCCESSFUL"]


def test_a_delivery_that_names_no_topic_is_refused_when_the_deployment_serves_only_some_projects(two_teams, capsys):
    """With BUILD_PROJECTS, whoever can push to the function's root must not speak for a team's project."""
    without_topic(team_build("team-b", "acme/b-web"))
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING"
    assert line["message"] == (
        "Refused: the delivery names no topic, and this deployment serves only the projects of BUILD_PROJECTS, "
        "so nothing is sent"
    )
    assert two_teams.app.calls == []


def test_a_build_id_claimed_in_another_teams_topic_cannot_freeze_a_teams_status(two_teams, google, new_instance):
    """Team A publishes, to its own topic, a build of its own repository whose id is team B's shown build: team B's
    newer build still replaces it (a message vouches only for its own project's builds)."""
    shown_build = team_build("team-b", "acme/b-web", "b-shown") | {"createTime": "2026-11-27T09:00:00Z"}
    delivered(shown_build, "team-b")
    google.app.record(shown_build)  # Cloud Build's API knows when it was created
    new_instance()
    claimed = team_build("team-a", "acme/a-web", "b-shown") | {"createTime": "2099-01-01T00:00:00Z"}
    delivered(claimed, "team-a")
    newer = team_build("team-b", "acme/b-web", "b-newer") | {"status": "FAILURE", "createTime": "2026-11-27T10:00:00Z"}
    delivered(newer, "team-b")
    [status] = two_teams.app.shown("acme", "b-web", COMMIT)
    assert (status["state"], status["url"].split("?")[0].rsplit("/", 1)[-1]) == ("FAILED", "b-newer")


@pytest.mark.parametrize(
    ("topic", "project"),
    [
        ("projects/team-a/topics/cloud-builds", "team-a"),
        ("//pubsub.googleapis.com/projects/team-b/topics/cloud-builds", "team-b"),
        ("projects/example.com:team-c/topics/cloud-builds", "example.com:team-c"),
        ("", None),
        (None, None),
        ("projects/team-a/subscriptions/x", None),
        ("//pubsub.googleapis.com/projects/../topics/x/extra", None),
        ("projects/-team-a/topics/cloud-builds", None),  # not a project ID
        ("projects/team..a/topics/cloud-builds", None),
        ("projects/Team_A/topics/cloud-builds", None),
    ],
)
def test_a_delivery_speaks_for_the_project_of_the_topic_it_names(topic, project):
    assert relay.event.delivered_from(topic) == project


def test_an_entry_limited_to_projects_serves_only_their_builds():
    [limited, anyone] = relay.credentials.parse_credentials(
        json.dumps([{"token": TEAM_A, "projects": ["team-*"]}, {"token": TEAM_B}]), "test"
    )
    repository = relay.repository.Repository("acme", "web")
    assert limited.serves(repository, "team-a")
    assert not limited.serves(repository, "other")
    assert not limited.serves(repository, "")  # a build whose project is not known
    assert anyone.serves(repository, "other")


@pytest.mark.parametrize("value", [[], None, "team-a", ["Team A"], ["team/a"]])
def test_projects_that_are_not_a_list_of_project_id_patterns_are_a_configuration_error(value):
    with pytest.raises(relay.errors.ConfigurationError):
        relay.credentials.parse_credentials(json.dumps([{"token": TEAM_A, "projects": value}]), "test")


def test_build_projects_must_be_project_ids():
    with pytest.raises(relay.errors.ConfigurationError, match="BUILD_PROJECTS must be project IDs"):
        relay.config.Config.from_env({"BUILD_PROJECTS": "team-a, ../x"})
    assert relay.config.Config.from_env({"BUILD_PROJECTS": "team-a, team-b hub-project"}).build_projects == {
        "team-a",
        "team-b",
        "hub-project",
    }
