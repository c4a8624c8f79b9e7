"""Connected repositories: where Cloud Build's own API says a repository of a connection lives, and what
the function does with each answer of that API (the Google stand-in plays it)."""

from __future__ import annotations

import json

import pytest

import relay.cloud_build
import relay.errors
import relay.warm
from standins.builds import build, connected_repository
from tests.conftest import deliver, log_lines


def test_connected_repositories_land_on_their_site_with_one_lookup_per_repository(both, bitbucket, google):
    google.app.repositories[connected_repository("PROJ/repo")] = f"{both.url}/scm/proj/repo.git"
    lookups = google.app.counts["cloudbuild.repositories.get"]
    for n, status in enumerate(("QUEUED", "WORKING", "SUCCESS") * 2):
        commit = f"{n // 3:040x}"
        deliver(build(status, f"dc-{n // 3}", source="connection", repo="PROJ/repo", commit=commit))
        deliver(build(status, f"cloud-{n // 3}", source="connection", repo="acme/webapp", commit=commit))
    assert google.app.counts["cloudbuild.repositories.get"] - lookups == 2
    for n in range(2):
        assert [s["state"] for s in both.shown(commit=f"{n:040x}")] == ["SUCCESSFUL"]
        assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", f"{n:040x}")] == ["SUCCESSFUL"]


def test_a_connected_repository_elsewhere_is_skipped_with_its_remote_uri(both, google, capsys):
    google.app.repositories[connected_repository("acme/site")] = "https://github.com/acme/site.git"
    deliver(build("SUCCESS", source="connection", repo="acme/site"))
    [line] = log_lines(capsys.readouterr().out)
    assert (
        line["message"]
        == "Skipped: the build's connected repository 'https://github.com/acme/site.git' is not on Bitbucket"
    )


def test_without_permission_to_ask_cloud_build_repo_full_name_is_taken_for_bitbucket_cloud_with_one_warning(
    both, bitbucket, google, capsys
):
    google.app.cloud_build_answer = 403
    for n in range(3):
        deliver(build("SUCCESS", f"b-{n}", source="connection", repo="acme/webapp", commit=f"{n:040x}"))
    warnings = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    assert len(warnings) == 1
    assert "answered 403" in warnings[0]["message"]
    assert "cloudbuild.repositories.get" in warnings[0]["message"]
    assert all(bitbucket.app.shown("acme", "webapp", f"{n:040x}") for n in range(3))


def test_a_transient_cloud_build_api_failure_is_redelivered(both, google, monkeypatch):
    monkeypatch.setenv("CLOUD_BUILD_API_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: connection refused
    with pytest.raises(relay.errors.TransientError):
        deliver(build("SUCCESS", source="connection", repo="acme/webapp"))


def connected(repo: str = "PROJ/repo", build_id: str = "b-1", status: str = "SUCCESS", **kwargs) -> dict:
    return build(status, build_id, source="connection", repo=repo, **kwargs)


def test_a_remote_uri_with_user_info_lands_on_its_server(both, google):
    google.app.repositories[connected_repository("PROJ/repo")] = (
        both.url.replace("://", "://jdoe@") + "/scm/proj/repo.git"
    )
    deliver(connected())
    assert [s["state"] for s in both.shown()] == ["SUCCESSFUL"]


@pytest.mark.parametrize("answer", [408, 429, 500, 503])
def test_a_transient_answer_of_the_api_is_redelivered_and_the_redelivery_lands(both, google, capsys, answer):
    google.app.repositories[connected_repository("PROJ/repo")] = f"{both.url}/scm/proj/repo.git"
    google.app.cloud_build_answer = answer
    with pytest.raises(relay.errors.TransientError):
        deliver(connected())
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING"
    assert line["message"].startswith(f"Will retry: Cloud Build's API answered {answer}")
    google.app.cloud_build_answer = None
    deliver(connected())
    assert [s["state"] for s in both.shown()] == ["SUCCESSFUL"]


@pytest.mark.parametrize("answer", [400, 409])
def test_an_answer_that_is_neither_transient_nor_a_refusal_skips_the_build_and_is_not_remembered(
    both, bitbucket, google, capsys, answer
):
    google.app.repositories[connected_repository("PROJ/repo")] = f"{both.url}/scm/proj/repo.git"
    google.app.cloud_build_answer = answer
    deliver(connected())  # acknowledged: not redelivered for ever, not guessed to be on Bitbucket Cloud
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING"
    assert line["message"] == (
        f"Skipped: Cloud Build's API answered {answer} for the build's connected repository "
        f"{connected_repository('PROJ/repo')}"
    )
    assert bitbucket.app.calls == []
    assert both.app.calls == []
    google.app.cloud_build_answer = None
    deliver(connected(build_id="b-2"))  # the next build asks again, and lands on the server
    assert [s["state"] for s in both.shown()] == ["SUCCESSFUL"]
    assert bitbucket.app.calls == []


def test_the_fallback_warning_comes_once_per_instance_whatever_the_repository(bitbucket, google, capsys):
    google.app.cloud_build_answer = 404
    deliver(connected("acme/webapp"))
    deliver(connected("acme/site", build_id="b-2"))
    warnings = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    assert len(warnings) == 1
    assert "answered 404" in warnings[0]["message"]
    assert bitbucket.app.shown("acme", "webapp", connected()["substitutions"]["COMMIT_SHA"])


def test_the_allow_list_applies_to_the_repository_the_api_names(both, bitbucket, google, monkeypatch, capsys):
    """REPO_FULL_NAME says acme/webapp, the API says PROJ/repo on the server: the list judges the latter."""
    google.app.repositories[connected_repository("acme/webapp")] = f"{both.url}/scm/proj/repo.git"
    monkeypatch.setenv("BITBUCKET_REPOSITORIES", "acme/*")
    deliver(connected("acme/webapp"))
    [line] = log_lines(capsys.readouterr().out)
    assert line["message"] == "Skipped: repository PROJ/repo is not in BITBUCKET_REPOSITORIES"
    assert both.app.calls == []
    assert bitbucket.app.calls == []


def test_the_allow_list_lets_the_resolved_repository_through(both, google, monkeypatch):
    google.app.repositories[connected_repository("acme/webapp")] = f"{both.url}/scm/proj/repo.git"
    monkeypatch.setenv("BITBUCKET_REPOSITORIES", "proj/*")
    deliver(connected("acme/webapp"))
    assert [s["state"] for s in both.shown()] == ["SUCCESSFUL"]


def service_account_with_token_uri(google, tmp_path, token_uri: str) -> str:
    """The stand-in's service account, with its token endpoint moved."""
    account = json.loads(google.sa_file.read_text())
    account["token_uri"] = token_uri
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(account))
    return str(path)


def test_googles_token_endpoint_unreachable_is_a_transient_error_logged_like_the_others(
    bitbucket, google, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv(
        "GOOGLE_APPLICATION_CREDENTIALS", service_account_with_token_uri(google, tmp_path, "http://127.0.0.1:9/token")
    )
    with pytest.raises(relay.errors.TransientError):
        deliver(connected("acme/webapp"))
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING"
    assert line["message"] == "Will retry: Google's token endpoint could not be reached (TransportError)"
    assert bitbucket.app.calls == []


def test_google_refusing_the_functions_credentials_is_a_configuration_error(bitbucket, google, capsys):
    google.app.refuse_tokens = True
    with pytest.raises(relay.errors.ConfigurationError):
        deliver(connected("acme/webapp"))
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "ERROR"
    assert "Google refused to refresh the function's credentials" in line["message"]
    assert bitbucket.app.calls == []


def test_the_answers_remembered_are_bounded_and_the_oldest_forgotten_first(bitbucket, google, monkeypatch):
    """Builds can name any number of connected repositories: the instance remembers the last REMOTES answers."""
    monkeypatch.setattr(relay.cloud_build.CloudBuild, "REMOTES", 3)
    for n in range(5):
        google.app.repositories[connected_repository(f"acme/repo-{n}")] = f"https://bitbucket.org/acme/repo-{n}.git"
    lookups = google.app.counts["cloudbuild.repositories.get"]
    for n in (*range(5), 4, 0):  # repo-4 is still remembered; repo-0 was forgotten
        deliver(build("SUCCESS", f"b-{n}", source="connection", repo=f"acme/repo-{n}"))
    assert google.app.counts["cloudbuild.repositories.get"] - lookups == 6
    assert relay.warm.instance is not None
    assert len(relay.warm.instance.cloud_build.remotes) == 3
