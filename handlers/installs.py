"""OAuth mode's events: a workspace that uninstalls the app, or revokes its bot token, is forgotten at once (its
tokens and provider keys); everything else of it stays as it was. Signed like every request (bot/web.py)."""

from __future__ import annotations

import logging

from slack_bolt import App

from storage.workspaces import workspace_key

log = logging.getLogger(__name__)


def register(app: App, services) -> None:  # noqa: ANN001 - bot.app.Services
    installs = services.installs

    def forget(body: dict) -> None:
        if installs is None:  # one workspace, one token from the environment: nothing here to forget
            log.warning("Slack says the app was uninstalled (or its token revoked): SLACK_BOT_TOKEN no longer works")
            return
        org_wide = bool(body.get("is_enterprise_install"))
        installs.uninstalled(body.get("enterprise_id"), body.get("team_id"), org_wide=org_wide)
        keyring = services.keys.keyring if services.keys else None
        if keyring is not None:  # its providers go at once here (within a second on other replicas)
            keyring.forget(workspace_key(body.get("enterprise_id"), body.get("team_id"), org_wide=org_wide))

    @app.event("app_uninstalled")
    def uninstalled(body: dict) -> None:
        forget(body)

    @app.event("tokens_revoked")
    def revoked(body: dict) -> None:
        if ((body.get("event") or {}).get("tokens") or {}).get("bot"):
            forget(body)  # (a user token revoked concerns no one here: the bot keeps none)
