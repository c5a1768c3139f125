"""OAuth mode's events: a workspace that uninstalls the app, or revokes its bot token, is forgotten at once (its
tokens and provider keys); everything else of it stays as it was. Workspaces of an org that approve its org-wide
install later take the jobs they followed before. Signed like every request (bot/web.py)."""

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

    def adopt(enterprise_id: str | None, team_ids: list) -> None:
        adopted = installs.granted(enterprise_id, team_ids)
        log.info("workspaces of %s approved the app%s", enterprise_id,
                 f" (their {adopted} job(s) followed before are its own)" if adopted else "")

    @app.event("team_access_granted")
    def granted(body: dict) -> None:
        team_ids = (body.get("event") or {}).get("team_ids")
        if installs is not None and body.get("is_enterprise_install") and isinstance(team_ids, list):
            services.background.submit(adopt, body.get("enterprise_id"), team_ids[:50_000])  # after the ack

    @app.event("tokens_revoked")
    def revoked(body: dict) -> None:
        if ((body.get("event") or {}).get("tokens") or {}).get("bot"):
            forget(body)  # (a user token revoked concerns no one here: the bot keeps none)
