from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay.bitbucket import Client
from relay.bitbucket_cloud import BitbucketCloud
from relay.bitbucket_data_center import BitbucketDataCenter
from relay.budget import Budget
from relay.certificates import CertificateFiles
from relay.cloud_build import CloudBuild
from relay.cloud_logging import CloudLogging
from relay.cloud_storage import TestReports
from relay.config import Config
from relay.credentials import Keyring, credential_source
from relay.jira import Jira
from relay.masking import known_secrets, scrubbed
from relay.reporting import Reporter
from relay.tracking import Tracking
from relay.transport import http_session

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


@dataclass
class WarmInstance:
    """What one warm instance keeps between events: built from the environment on the first event."""

    config: Config
    keyring: Keyring
    cloud_build: CloudBuild
    reporter: Reporter
    tests: TestReports | None = None
    tracking: Tracking | None = None  # Jira, and a Data Center commit's deployments

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        budget: Budget | None = None,
        client_type: type[Client] | None = None,
        reports_for_shown: bool = True,
    ) -> WarmInstance:
        """The instance the environment configures; a resync passes its own budget, client and report rule."""
        config = Config.from_env(env)
        session = http_session(config.retry_backoff_seconds, sum(config.timeout), config.connections)
        keyring = Keyring(credential_source(env), session, config.oauth_token_url, config.timeout)
        budget = budget or Budget(config.rate_limit_cooldown_seconds)
        client = (client_type or Client)(keyring, budget, CertificateFiles(), session, config.timeout)
        cloud_build = CloudBuild(config.cloud_build_api_url, config.timeout)
        sites = BitbucketCloud(config.api_url, client), BitbucketDataCenter(client)
        logs = CloudLogging(config.logging_api_url, cloud_build, config.log_view, config.log_wait_seconds)
        reporter = Reporter(*sites, keyring, budget, cloud_build, reports_for_shown=reports_for_shown, logs=logs,
                            log_excerpts=config.log_excerpts, log_lines=config.log_excerpt_lines)  # fmt: skip
        tracking = Tracking(Jira(config.jira_api_url, session, config.timeout, keyring), keyring, budget, *sites)
        return cls(config, keyring, cloud_build, reporter, TestReports(config.test_report_buckets), tracking)

    def masked(self, value: Any) -> Any:
        """A text (or a log line's fields) with every credential this instance holds masked: a build may show one."""
        tokens = self.tracking.jira.secret_values() if self.tracking else []
        return scrubbed(value, known_secrets([*self.keyring.secret_values(), *tokens]))


instance: WarmInstance | None = None
_warm_lock = threading.Lock()


def warm_instance() -> WarmInstance:
    """This instance's state, created on the first event that needs it."""
    global instance
    with _warm_lock:
        if instance is None:
            instance = WarmInstance.from_env(os.environ)
        return instance
