"""The original function's shape, for the benchmark to run side by side with main.py.

Re-implemented from its description (the project's reference notes, "What others
in this space do"), not copied: it imports google-cloud-kms, google-cloud-storage
and requests when it is loaded; reads the credentials from a KMS-encrypted object
in a bucket on its first event and keeps them until the instance dies; splits
`bitbucket_<owner>_<repo>` with split('_', 2); keys the status by buildTriggerId;
maps every status it does not know to FAILED; never sets refname; and posts every
message, each over a new connection. Only the endpoints are configurable, so that
it can run against the local stand-ins.
"""

import base64
import json
import os

import requests
from google.cloud import kms, storage

STATES = {"QUEUED": "INPROGRESS", "WORKING": "INPROGRESS", "SUCCESS": "SUCCESSFUL"}
_credentials = None


def _get_credentials():
    global _credentials
    if _credentials is None:
        blob = storage.Client().bucket(os.environ["SECRETS_BUCKET"]).blob(os.environ["SECRETS_OBJECT"])
        client = kms.KeyManagementServiceClient(
            transport="rest", client_options={"api_endpoint": os.environ["KMS_API_ENDPOINT"]}
        )
        response = client.decrypt(
            request={"name": os.environ["KMS_CRYPTO_KEY_ID"], "ciphertext": blob.download_as_bytes()}
        )
        _credentials = json.loads(response.plaintext)
    return _credentials


def build_status(event, context):
    build = json.loads(base64.b64decode(event["data"]))
    _, owner, repo = build["source"]["repoSource"]["repoName"].split("_", 2)
    commit = build["sourceProvenance"]["resolvedRepoSource"]["commitSha"]
    credentials = _get_credentials()
    url = f"{os.environ['BITBUCKET_API_URL']}/repositories/{owner}/{repo}/commit/{commit}/statuses/build"
    body = {
        "key": build["buildTriggerId"],
        "state": STATES.get(build["status"], "FAILED"),
        "name": "Cloud Build",
        "url": build["logUrl"],
        "description": build["status"],
    }
    requests.post(url, json=body, auth=(credentials["username"], credentials["password"]), timeout=30)
