"""Errors to Sentry (SENTRY_DSN), through sentry-sdk, imported only when it is set. Every event and breadcrumb passes
the bot's scrubber before it leaves: the configured secrets (tokens, keys, the database password, the DSN itself),
anything shaped like a credential, and Slack's response URLs. No local variables, and no personal data (sentry-sdk's
default), are sent."""

from __future__ import annotations

from collections.abc import Iterable

from bot.scrub import Scrubber


def start(dsn: str, secrets: Iterable[str], *, environment: str | None = None) -> None:
    import sentry_sdk

    scrub = Scrubber(secrets, learned=True)

    def scrubbed(event, hint):  # noqa: ANN001, ANN202 - sentry-sdk's hook signature
        return scrub.deep(event)

    sentry_sdk.init(dsn=dsn, before_send=scrubbed, before_breadcrumb=scrubbed,
                    include_local_variables=False, max_request_body_size="never", environment=environment,
                    traces_sample_rate=0.0, default_integrations=True, auto_enabling_integrations=False)


def stop(timeout: float = 2.0) -> None:
    """Send what is queued (within `timeout`) and stop: for a process that is exiting."""
    import sentry_sdk

    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=timeout)
