"""The relay of Cloud Build's results to Bitbucket (and Jira): everything the function does but receive the event,
which the entry points in main.py hand to relay.event.

A module per concern, in data-flow order (each imports only modules before it; docs/development.md has what each
owns and a diagram of their imports, .importlinter the layers `make lint` checks):
errors, text, masking, logs, lru, config, scope, decoding (the event's input and settings, and what of a text may
leave); states, repository, issue_keys, status, annotations, step_log, report, translate, junit, tracked
(translation, pure); transport, credentials, budget, certificates (how a request is sent, and as whom);
bitbucket, bitbucket_cloud, bitbucket_data_center, cloud_build, cloud_logging, cloud_storage, jira (the sites and
Google's and Atlassian's APIs); reporting, tracking, warm, event (never backwards, Jira after the status, the
instance's clients, the event's path).

The package exports nothing: import the module you need (`from relay.translate import translate`).
"""
