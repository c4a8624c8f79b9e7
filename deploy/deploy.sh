#!/usr/bin/env bash
# Deploy bitbucket-build-status to Google Cloud, or store its Bitbucket credentials.
#
#   deploy/deploy.sh deploy        enable APIs, create what is missing, grant, deploy (idempotent)
#   deploy/deploy.sh credentials   read the credentials JSON from standard input and store it
#   deploy/deploy.sh resync        heal Bitbucket from Cloud Build's record since SINCE, with the deployment's
#                                  configuration (python -m resync; DRY_RUN=1 there writes nothing)
#
# Settings (environment): PROJECT and REGION (required); SOURCE=file (a Secret
# Manager secret mounted as a file, the default), secret (the same secret read with
# the client library) or bucket (a KMS-encrypted object, the original design);
# DRY_RUN=1 prints every command, one per line, instead of running it.
# For Bitbucket Data Center: CONNECTIONS="name ..." lets the function read the
# repositories of those Cloud Build connections (in REGION); VPC_CONNECTOR=name,
# or NETWORK=name with SUBNET=name (Direct VPC egress), reach a private server
# (private ranges only).
# For builds of other projects: BUILD_PROJECTS="team-a team-b" keeps everything in PROJECT (the hub) and
# attaches, for each listed project, a push subscription in the hub to that project's cloud-builds topic.
set -euo pipefail

: "${PROJECT:?set PROJECT, e.g. make deploy PROJECT=my-project REGION=europe-west1}"
SOURCE=${SOURCE:-file}
DRY_RUN=${DRY_RUN:-}
FUNCTION=${FUNCTION:-bitbucket-build-status}
TOPIC=${TOPIC:-cloud-builds}
SA_NAME=${SA_NAME:-bitbucket-build-status}
SA="$SA_NAME@$PROJECT.iam.gserviceaccount.com"
BUILD_SA_NAME=${BUILD_SA_NAME:-bitbucket-build-status-build}
BUILD_SA="$BUILD_SA_NAME@$PROJECT.iam.gserviceaccount.com"
# The function's --timeout: main.py's event deadline (EVENT_DEADLINE_SECONDS, 120 s) and 30 s to spare.
TIMEOUT=${TIMEOUT:-150s}
# Events one instance handles at once: Cloud Run's --concurrency, and the Functions Framework's THREADS (it
# defaults to 4 per vCPU, and every event beyond them would wait in gunicorn's queue). One setting drives both.
CONCURRENCY=${CONCURRENCY:-80}
SECRET=${SECRET:-bitbucket-build-status-credentials}
# Where the file source mounts the secret; Cloud Run shadows the whole directory.
CREDENTIALS_FILE=${CREDENTIALS_FILE:-/etc/secrets/bitbucket-credentials.json}
BUCKET=${BUCKET:-$PROJECT-bitbucket-build-status}
OBJECT=${OBJECT:-bitbucket-credentials.json.enc}
KEYRING=${KEYRING:-bitbucket-build-status}
KEY=${KEY:-credentials}
KMS_LOCATION=${KMS_LOCATION:-global}
KEY_ID="projects/$PROJECT/locations/$KMS_LOCATION/keyRings/$KEYRING/cryptoKeys/$KEY"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"  # `--source=.` uploads what .gcloudignore lets through: main.py, requirements.txt, relay/*.py

CONNECTIONS=${CONNECTIONS:-}
# The log view through which the function reads a failed step's lines: builds' logs only, in each served project.
LOG_VIEW=${LOG_VIEW:-bitbucket-build-status-builds}
LOG_EXCERPTS=${LOG_EXCERPTS:-}
# Alerts (ALERTS=off: none): log-based metrics on the function's own lines and two alert policies; ALERT_EMAIL
# adds an email notification channel to them.
ALERTS=${ALERTS:-on}
ALERT_EMAIL=${ALERT_EMAIL:-}
# Buckets where builds leave JUnit files: the function may read objects there, and nowhere else.
TEST_REPORT_BUCKETS=${TEST_REPORT_BUCKETS:-}
TEST_REPORT_BUCKETS=${TEST_REPORT_BUCKETS//,/ }  # spaces only: --set-env-vars splits on commas
BUILD_PROJECTS=${BUILD_PROJECTS:-}
# A push subscription's ack deadline must outlast the function's --timeout (150 s).
ACK_DEADLINE=${ACK_DEADLINE:-180}
VPC_CONNECTOR=${VPC_CONNECTOR:-}
NETWORK=${NETWORK:-}
SUBNET=${SUBNET:-}
if [ -n "$VPC_CONNECTOR" ] && [ -n "$NETWORK$SUBNET" ]; then
  echo "VPC_CONNECTOR and NETWORK/SUBNET both reach a network: choose one" >&2; exit 2
fi
if [ -n "$NETWORK$SUBNET" ] && { [ -z "$NETWORK" ] || [ -z "$SUBNET" ]; }; then
  echo "Direct VPC egress needs both NETWORK and SUBNET" >&2; exit 2
fi

case "$SOURCE" in
  file | secret | bucket) ;;
  *) echo "SOURCE must be file, secret or bucket, not '$SOURCE'" >&2; exit 2 ;;
esac

# Run a command, or print it (shell-quoted, one line) when DRY_RUN is set.
run() {
  if [ -n "$DRY_RUN" ]; then
    local words=() word
    for word in "$@"; do
      if [[ $word =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then words+=("$word"); else words+=("${word@Q}"); fi
    done
    echo "${words[*]}"
  else
    "$@"
  fi
}

# Whether a resource exists (`describe` succeeds); in a dry run nothing exists yet.
exists() {
  [ -z "$DRY_RUN" ] && "$@" >/dev/null 2>&1
}

# The project's number, which names its Google-managed service agents.
project_number() {
  if [ -n "$DRY_RUN" ]; then
    echo PROJECT_NUMBER
  else
    gcloud projects describe "$PROJECT" --format='value(projectNumber)'
  fi
}

# The function's URL, where each project's push subscription delivers.
function_url() {
  if [ -n "$DRY_RUN" ]; then
    echo FUNCTION_URL
  else
    gcloud functions describe "$FUNCTION" --region="$REGION" --project="$PROJECT" --format='value(serviceConfig.uri)'
  fi
}

# Builds of other projects: each project's own cloud-builds topic, and in the hub a push subscription attached
# to it that pushes to the function with the topic as its path (so a delivery says which project it is from),
# signed with the trigger's account (which holds the invoker role).
subscribe_projects() {
  [ -n "$BUILD_PROJECTS" ] || return 0
  local url project subscription
  url=$(function_url)
  for project in $BUILD_PROJECTS; do
    exists gcloud pubsub topics describe "$TOPIC" --project="$project" ||
      run gcloud pubsub topics create "$TOPIC" --project="$project"
    subscription="$FUNCTION-$project"
    local settings=(--push-endpoint="$url/projects/$project/topics/$TOPIC" --push-auth-service-account="$SA"
      --ack-deadline="$ACK_DEADLINE" --min-retry-delay=10s --max-retry-delay=600s
      --message-retention-duration=1d --project="$PROJECT")
    if exists gcloud pubsub subscriptions describe "$subscription" --project="$PROJECT"; then
      run gcloud pubsub subscriptions update "$subscription" "${settings[@]}"
    else
      run gcloud pubsub subscriptions create "$subscription" --topic="projects/$project/topics/$TOPIC" \
        "${settings[@]}"
    fi
  done
}

# A failed step's lines: a log view of the project's _Default bucket that shows builds' logs only, and the
# function's account allowed to read through it (roles/logging.viewAccessor on the view), nothing else of the logs.
log_view() {
  local project=$1 where=(--bucket=_Default --location=global --project="$1")
  exists gcloud logging views describe "$LOG_VIEW" "${where[@]}" ||
    run gcloud logging views create "$LOG_VIEW" "${where[@]}" --log-filter='resource.type="build"' \
      --description="Cloud Build logs, for bitbucket-build-status"
  run gcloud logging views add-iam-policy-binding "$LOG_VIEW" "${where[@]}" --member="serviceAccount:$SA" \
    --role=roles/logging.viewAccessor
}

# Someone is told when the relay breaks: a log-based metric of the function's ERROR lines (a refused credential, an
# untrusted certificate, a configuration error) and one of its "Will retry" lines (events failing for
# redelivery), and an alert policy on each: any ERROR in 5 minutes; retries in every 5 minutes for 30 minutes.
# Each is created only when missing, so a second `make deploy` changes nothing.
alerts() {
  [ "$ALERTS" != off ] || return 0
  local lines="resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"$FUNCTION\""
  exists gcloud logging metrics describe "$FUNCTION-errors" --project="$PROJECT" ||
    run gcloud logging metrics create "$FUNCTION-errors" --project="$PROJECT" \
      --description="ERROR lines of $FUNCTION: a refused credential, an untrusted certificate, a configuration error" \
      --log-filter="$lines AND severity>=ERROR"
  exists gcloud logging metrics describe "$FUNCTION-retries" --project="$PROJECT" ||
    run gcloud logging metrics create "$FUNCTION-retries" --project="$PROJECT" \
      --description="Events $FUNCTION raised for Pub/Sub to deliver again" \
      --log-filter="$lines AND jsonPayload.message=~\"^Will retry\""
  local channel=() name
  if [ -n "$ALERT_EMAIL" ]; then
    name=$(email_channel)
    if [ -z "$name" ] || [ -n "$DRY_RUN" ]; then
      run gcloud beta monitoring channels create --project="$PROJECT" --type=email \
        --display-name="$FUNCTION alerts ($ALERT_EMAIL)" --channel-labels="email_address=$ALERT_EMAIL"
      name=$(email_channel)
    fi
    channel=(--notification-channels="$name")
  fi
  local runbook="Run make doctor PROJECT=$PROJECT REGION=$REGION, then the make resync it prints (docs/operations.md)."
  alert_policy "$FUNCTION: errors" "$FUNCTION-errors" 0s "${channel[@]}" \
    --documentation="The function logged an ERROR. $runbook"
  alert_policy "$FUNCTION: events failing for 30 minutes" "$FUNCTION-retries" 1800s "${channel[@]}" \
    --documentation="Events keep failing and are delivered again. $runbook"
}

# The email channel of ALERT_EMAIL, when one exists (in a dry run, a placeholder).
email_channel() {
  if [ -n "$DRY_RUN" ]; then
    echo NOTIFICATION_CHANNEL
  else
    gcloud beta monitoring channels list --project="$PROJECT" --format='value(name)' \
      --filter="type=\"email\" AND labels.email_address=\"$ALERT_EMAIL\"" | head -n 1
  fi
}

# An alert policy on a log-based metric: open an incident while the metric counts anything for `duration`.
alert_policy() {
  local display=$1 metric=$2 duration=$3
  shift 3
  if [ -z "$DRY_RUN" ] && [ -n "$(gcloud alpha monitoring policies list --project="$PROJECT" --format='value(name)' \
    --filter="displayName=\"$display\"")" ]; then
    return 0
  fi
  run gcloud alpha monitoring policies create --project="$PROJECT" --display-name="$display" \
    --condition-display-name="$display" \
    --condition-filter="metric.type=\"logging.googleapis.com/user/$metric\" AND resource.type=\"cloud_run_revision\"" \
    --aggregation='{"alignmentPeriod": "300s", "perSeriesAligner": "ALIGN_SUM"}' --if='> 0' \
    --duration="$duration" "$@"
}

# The secret both secret sources read (created empty: `make credentials` adds its versions).
create_secret() {
  exists gcloud secrets describe "$SECRET" --project="$PROJECT" ||
    run gcloud secrets create "$SECRET" --replication-policy=automatic --project="$PROJECT"
}

deploy() {
  if [ -n "$BUILD_PROJECTS" ]; then
    echo "Whoever runs this needs, in each of $BUILD_PROJECTS, roles/pubsub.editor (to create its cloud-builds" \
      "topic and attach the hub's subscription to it: pubsub.topics.attachSubscription) and" \
      "roles/resourcemanager.projectIamAdmin (to grant the function's account there); in $PROJECT, besides" \
      "what a deployment needs, roles/pubsub.editor and roles/iam.serviceAccountUser on $SA (a push subscription" \
      "signs as it)." >&2
  fi
  : "${REGION:?set REGION, e.g. make deploy PROJECT=my-project REGION=europe-west1}"
  if [ -n "$TEST_REPORT_BUCKETS" ]; then  # checked by main.py's own rule, as the function will read it
    local served=${BUILD_PROJECTS:+$PROJECT $BUILD_PROJECTS}
    PYTHONPATH="$ROOT" "${PYTHON:-python3}" -c '
import sys
from relay.config import report_buckets
from relay.errors import ConfigurationError
try:
    report_buckets(sys.argv[1], frozenset(sys.argv[2].split()))
except ConfigurationError as error:
    sys.exit(str(error))
' "$TEST_REPORT_BUCKETS" "$served" || exit 2
  fi
  local apis=(cloudfunctions.googleapis.com run.googleapis.com eventarc.googleapis.com
    cloudbuild.googleapis.com pubsub.googleapis.com artifactregistry.googleapis.com iam.googleapis.com
    logging.googleapis.com monitoring.googleapis.com)
  if [ "$SOURCE" != bucket ]; then
    apis+=(secretmanager.googleapis.com)
  else
    apis+=(cloudkms.googleapis.com storage.googleapis.com)
  fi
  run gcloud services enable "${apis[@]}" --project="$PROJECT"
  exists gcloud pubsub topics describe "$TOPIC" --project="$PROJECT" ||
    run gcloud pubsub topics create "$TOPIC" --project="$PROJECT"
  exists gcloud iam service-accounts describe "$SA" --project="$PROJECT" ||
    run gcloud iam service-accounts create "$SA_NAME" --display-name="Bitbucket build status" --project="$PROJECT"

  # New projects no longer let the default compute account build functions: a build
  # account of our own, with the roles Google documents for building a function.
  exists gcloud iam service-accounts describe "$BUILD_SA" --project="$PROJECT" ||
    run gcloud iam service-accounts create "$BUILD_SA_NAME" --display-name="Bitbucket build status (builds)" \
      --project="$PROJECT"
  local role
  for role in roles/logging.logWriter roles/artifactregistry.writer roles/storage.objectAdmin; do
    run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$BUILD_SA" --role="$role" \
      --condition=None
  done

  # Pub/Sub service agents created on or before 2021-04-08 (the original function's
  # projects) must be able to mint tokens for the trigger's account; harmless elsewhere.
  run gcloud iam service-accounts add-iam-policy-binding "$SA" \
    --member="serviceAccount:service-$(project_number)@gcp-sa-pubsub.iam.gserviceaccount.com" \
    --role=roles/iam.serviceAccountTokenCreator --project="$PROJECT"

  # Of two builds of one status the newer wins: the function reads a shown build's createTime
  # (cloudbuild.builds.get; roles/cloudbuild.builds.viewer is the smallest role that holds it, and builds are
  # granted at project level only), in every project whose builds it serves.
  local served
  for served in "$PROJECT" $BUILD_PROJECTS; do
    run gcloud projects add-iam-policy-binding "$served" --member="serviceAccount:$SA" \
      --role=roles/cloudbuild.builds.viewer --condition=None
    log_view "$served"
  done

  # Connected repositories: Cloud Build's API says where each lives (cloudbuild.repositories.get);
  # granted only on the connections named, with the smallest role that holds it.
  local connection
  for connection in $CONNECTIONS; do
    run gcloud builds connections add-iam-policy-binding "$connection" --region="$REGION" \
      --member="serviceAccount:$SA" --role=roles/cloudbuild.connectionViewer --project="$PROJECT"
  done

  local env_vars secrets=() network=() ingress=()
  if [ -n "$VPC_CONNECTOR" ]; then
    network=(--vpc-connector="$VPC_CONNECTOR" --egress-settings=private-ranges-only)
  fi
  if [ "$SOURCE" != bucket ]; then
    create_secret
    run gcloud secrets add-iam-policy-binding "$SECRET" --member="serviceAccount:$SA" \
      --role=roles/secretmanager.secretAccessor --project="$PROJECT"
  fi
  if [ "$SOURCE" = file ]; then
    # Cloud Run reads the latest version each time the file is read; a mount needs a version to exist.
    if [ -z "$DRY_RUN" ] && ! gcloud secrets versions describe latest --secret="$SECRET" --project="$PROJECT" \
      >/dev/null 2>&1; then
      echo "The secret $SECRET has no version yet: store the credentials first (make credentials PROJECT=$PROJECT" \
        "< credentials.json), then run make deploy again." >&2
      exit 2
    fi
    secrets=(--set-secrets="$CREDENTIALS_FILE=$SECRET:latest")
    env_vars="BITBUCKET_CREDENTIALS_FILE=$CREDENTIALS_FILE"
  elif [ "$SOURCE" = secret ]; then
    env_vars="CREDENTIALS_SECRET=projects/$PROJECT/secrets/$SECRET"
  else
    exists gcloud kms keyrings describe "$KEYRING" --location="$KMS_LOCATION" --project="$PROJECT" ||
      run gcloud kms keyrings create "$KEYRING" --location="$KMS_LOCATION" --project="$PROJECT"
    exists gcloud kms keys describe "$KEY" --keyring="$KEYRING" --location="$KMS_LOCATION" --project="$PROJECT" ||
      run gcloud kms keys create "$KEY" --keyring="$KEYRING" --location="$KMS_LOCATION" --purpose=encryption \
        --project="$PROJECT"
    exists gcloud storage buckets describe "gs://$BUCKET" --project="$PROJECT" ||
      run gcloud storage buckets create "gs://$BUCKET" --location="$REGION" --uniform-bucket-level-access \
        --public-access-prevention --project="$PROJECT"
    run gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --member="serviceAccount:$SA" \
      --role=roles/storage.objectViewer \
      --condition="expression=resource.name == \"projects/_/buckets/$BUCKET/objects/$OBJECT\",title=bitbucket-credentials-object-only" \
      --project="$PROJECT"
    run gcloud kms keys add-iam-policy-binding "$KEY" --keyring="$KEYRING" --location="$KMS_LOCATION" \
      --member="serviceAccount:$SA" --role=roles/cloudkms.cryptoKeyDecrypter --project="$PROJECT"
    env_vars="SECRETS_BUCKET=$BUCKET,SECRETS_OBJECT=$OBJECT,KMS_CRYPTO_KEY_ID=$KEY_ID"
  fi

  local entry bucket granted=" "
  for entry in $TEST_REPORT_BUCKETS; do
    bucket=${entry#*=}  # PROJECT=bucket: a bucket only that project's builds may name
    case "$granted" in *" $bucket "*) continue ;; esac  # given to two projects: granted once
    granted="$granted$bucket "
    run gcloud storage buckets add-iam-policy-binding "gs://$bucket" --member="serviceAccount:$SA" \
      --role=roles/storage.objectViewer --project="$PROJECT"
  done
  if [ -n "$TEST_REPORT_BUCKETS" ]; then
    env_vars="TEST_REPORT_BUCKETS=$TEST_REPORT_BUCKETS,$env_vars"  # spaces: --set-env-vars splits on commas
  fi
  env_vars="LOG_VIEW=$LOG_VIEW,$env_vars"
  if [ -n "$LOG_EXCERPTS" ]; then
    env_vars="LOG_EXCERPTS=$LOG_EXCERPTS,$env_vars"
  fi
  if [ -n "$BUILD_PROJECTS" ]; then
    # Which projects' builds are served (the hub's own too); pushes from the hub's subscriptions are internal.
    env_vars="BUILD_PROJECTS=$PROJECT $BUILD_PROJECTS,$env_vars"  # spaces: --set-env-vars splits on commas
    ingress=(--ingress-settings=internal-only)
  fi

  # One instance handling events concurrently: its per-status locks and memory
  # serialize every status, so two instances cannot race between read and write.
  run gcloud functions deploy "$FUNCTION" --gen2 --project="$PROJECT" --region="$REGION" \
    --runtime=python313 --source=. --entry-point=build_status_cloudevent \
    --trigger-topic="$TOPIC" --retry --service-account="$SA" --trigger-service-account="$SA" \
    --build-service-account="projects/$PROJECT/serviceAccounts/$BUILD_SA" --timeout="$TIMEOUT" \
    --max-instances=1 --concurrency="$CONCURRENCY" --cpu=1 --memory=256Mi \
    --set-env-vars="THREADS=$CONCURRENCY,$env_vars" "${secrets[@]}" "${network[@]}" "${ingress[@]}"
  if [ -n "$NETWORK" ]; then
    # Direct VPC egress is set on the Cloud Run service that runs the function.
    run gcloud run services update "$FUNCTION" --region="$REGION" --network="$NETWORK" --subnet="$SUBNET" \
      --vpc-egress=private-ranges-only --project="$PROJECT"
  fi
  # The Pub/Sub trigger calls the function as the same service account.
  run gcloud functions add-invoker-policy-binding "$FUNCTION" --region="$REGION" \
    --member="serviceAccount:$SA" --project="$PROJECT"
  subscribe_projects
  alerts
}

credentials() {
  if [ -n "$DRY_RUN" ]; then
    :  # nothing is read: the commands below would read the JSON from standard input
  else
    if [ -t 0 ]; then
      echo "Paste the credentials JSON, then Ctrl-D (it is not echoed to any log):" >&2
    fi
    local json
    json=$(cat)
    # Checked by the function's own parser (standard library only), so what is stored is what it accepts.
    printf '%s' "$json" | PYTHONPATH="$ROOT" python3 -c '
import sys
from relay.credentials import parse_credentials
from relay.errors import ConfigurationError
try:
    parse_credentials(sys.stdin.read(), "standard input")
except ConfigurationError as error:
    sys.exit(str(error))
' || { echo "standard input is not credentials JSON the function accepts; nothing was stored" >&2; exit 2; }
    exec 3<<<"$json"
    exec 0<&3
  fi
  if [ "$SOURCE" != bucket ]; then
    run gcloud services enable secretmanager.googleapis.com --project="$PROJECT"
    create_secret
    run gcloud secrets versions add "$SECRET" --data-file=- --project="$PROJECT"
  elif [ -n "$DRY_RUN" ]; then
    printf '%s | %s\n' \
      "$(run gcloud kms encrypt --key="$KEY_ID" --plaintext-file=- --ciphertext-file=-)" \
      "$(run gcloud storage cp - "gs://$BUCKET/$OBJECT" --project="$PROJECT")"
  else
    gcloud kms encrypt --key="$KEY_ID" --plaintext-file=- --ciphertext-file=- \
      | gcloud storage cp - "gs://$BUCKET/$OBJECT" --project="$PROJECT"
  fi
}

# Resync runs here, with the person's own Google credentials, and the deployed function's configuration: its
# environment and where its credentials are (a mounted secret is read with Secret Manager's API instead).
# PROJECT is the project whose builds are healed; FUNCTION_PROJECT, where the function is deployed (the hub,
# when it serves BUILD_PROJECTS), PROJECT by default.
resync() {
  : "${REGION:?set REGION (where the function is deployed), e.g. make resync PROJECT=my-project REGION=europe-west1 SINCE=24h}"
  : "${SINCE:?set SINCE: an age (24h, 7d) or a time (2026-11-28T09:00:00Z)}"
  local function_project=${FUNCTION_PROJECT:-$PROJECT}
  local args=(--project "$PROJECT" --function-project "$function_project" --since "$SINCE"
    --locations "${LOCATIONS:-global $REGION}")
  [ -z "${SHARE:-}" ] || args+=(--share "$SHARE")
  [ -z "${HOURLY_BUDGET:-}" ] || args+=(--hourly-budget "$HOURLY_BUDGET")
  [ -z "$DRY_RUN" ] || args+=(--dry-run)
  echo "Reading the deployment's configuration (gcloud functions describe: roles/cloudfunctions.viewer)" >&2
  local described
  described=$(gcloud functions describe "$FUNCTION" --region="$REGION" --project="$function_project" --format=json)
  printf '%s' "$described" | "${PYTHON:-python3}" -m resync "${args[@]}" --function-config -
}

# Doctor runs here too, with the person's own Google credentials: the deployment's description and its project's
# subscriptions, then python -m doctor (it writes nothing anywhere).
doctor() {
  : "${REGION:?set REGION (where the function is deployed), e.g. make doctor PROJECT=my-project REGION=europe-west1}"
  local function_project=${FUNCTION_PROJECT:-$PROJECT} workdir status=0
  workdir=$(mktemp -d)
  echo "Reading the deployment (gcloud functions describe, gcloud pubsub subscriptions list: roles/cloudfunctions.viewer" \
    "and roles/pubsub.viewer on $function_project)" >&2
  if ! gcloud functions describe "$FUNCTION" --region="$REGION" --project="$function_project" --format=json \
    > "$workdir/function.json"; then
    echo "✗ $FUNCTION is not deployed in $function_project ($REGION)" >&2
    echo "    → make deploy PROJECT=$function_project REGION=$REGION" >&2
    rm -rf "$workdir"
    exit 1
  fi
  gcloud pubsub subscriptions list --project="$function_project" --format=json > "$workdir/subscriptions.json" ||
    echo "[]" > "$workdir/subscriptions.json"
  local args=(--project "$PROJECT" --function-project "$function_project" --region "$REGION" --since "${SINCE:-24h}"
    --function-config "$workdir/function.json" --subscriptions "$workdir/subscriptions.json")
  [ -z "${LOCATIONS:-}" ] || args+=(--locations "$LOCATIONS")
  "${PYTHON:-python3}" -m doctor "${args[@]}" || status=$?
  rm -rf "$workdir"
  return "$status"
}

case "${1:-}" in
  deploy) deploy ;;
  credentials) credentials ;;
  resync) resync ;;
  doctor) doctor ;;
  *) echo "usage: $0 deploy|credentials|resync|doctor" >&2; exit 2 ;;
esac
