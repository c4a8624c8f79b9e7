"""Resync's view of the deployment: its environment as `gcloud functions describe` gives it, the secrets it mounts
read with Secret Manager's API, the roles a run needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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


def deployment_env(function: Mapping[str, Any], project: str) -> dict[str, str]:
    """The environment a deployed function runs with (`gcloud functions describe --format=json`, 2nd gen), its
    credentials as resync reads them: a secret mounted as a file, or set as BITBUCKET_CREDENTIALS, becomes
    CREDENTIALS_SECRET, read with Secret Manager's API."""
    service = relay.text.as_mapping(function.get("serviceConfig"))
    env = {str(k): str(v) for k, v in relay.text.as_mapping(service.get("environmentVariables")).items()}
    for secret in service.get("secretEnvironmentVariables") or []:
        if relay.text.as_mapping(secret).get("key") == "BITBUCKET_CREDENTIALS":
            env["CREDENTIALS_SECRET"] = _secret_name(secret, secret.get("version"), project)
    path = env.pop("BITBUCKET_CREDENTIALS_FILE", None)
    if path:
        env["CREDENTIALS_SECRET"] = _mounted_secret(service.get("secretVolumes") or [], path, project)
    return env


def _mounted_secret(volumes: list[Any], path: str, project: str) -> str:
    """The secret version mounted at `path`; a volume that names no versions mounts the latest as a file named
    after the secret."""
    for volume in map(relay.text.as_mapping, volumes):
        mount = relay.text.as_text(volume.get("mountPath")).rstrip("/")
        versions = volume.get("versions") or [{"path": volume.get("secret"), "version": "latest"}]
        for version in map(relay.text.as_mapping, versions):
            if f"{mount}/{relay.text.as_text(version.get('path')).lstrip('/')}" == path:
                return _secret_name(volume, version.get("version"), project)
    raise relay.errors.ConfigurationError(
        f"the deployment reads BITBUCKET_CREDENTIALS_FILE={path}, which no secret mounts"
    )


def _secret_name(secret: Mapping[str, Any], version: Any, project: str) -> str:
    owner = relay.text.as_text(secret.get("projectId")) or project
    name, version = relay.text.as_text(secret.get("secret")), relay.text.as_text(version) or "latest"
    return f"projects/{owner}/secrets/{name}/versions/{version}"


def run_env(base: Mapping[str, str], deployed: Mapping[str, str] | None) -> dict[str, str]:
    """The person's environment, with the deployment's settings and credential source in place of their own."""
    if deployed is None:
        return dict(base)
    sources = (*relay.credentials.SINGLE_VARIABLES, *relay.credentials.BUCKET_VARIABLES)
    return {**{k: v for k, v in base.items() if k not in sources}, **deployed}


def permissions(project: str, env: Mapping[str, str]) -> str:
    """What the person running resync needs, besides reading the deployment (roles/cloudfunctions.viewer)."""
    needs = [f"cloudbuild.builds.list on {project} (roles/cloudbuild.builds.viewer)"]
    if env.get("CREDENTIALS_SECRET"):
        needs.append(f"secretmanager.versions.access on {env['CREDENTIALS_SECRET'].split('/versions/')[0]} "
                     "(roles/secretmanager.secretAccessor)")  # fmt: skip
    if env.get("SECRETS_BUCKET"):
        needs.append(f"storage.objects.get on gs://{env['SECRETS_BUCKET']} (roles/storage.objectViewer) and "
                     f"decrypt on {env.get('KMS_CRYPTO_KEY_ID')} (roles/cloudkms.cryptoKeyDecrypter)")  # fmt: skip
    needs.append("for connected repositories, cloudbuild.repositories.get (roles/cloudbuild.connectionViewer)")
    return "Resync runs with your application default credentials and needs " + "; ".join(needs) + "."
