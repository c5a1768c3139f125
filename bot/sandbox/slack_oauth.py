"""The Slack stand-in's OAuth side: installs (`oauth.v2.access` with a code), tokens per workspace that may expire
and rotate (`oauth.v2.access` with a refresh token, which Slack revokes once used), uninstalls, and events signed
as Slack signs them. Mixed into SlackStandIn (bot/sandbox/slack.py)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field

CLIENT_ID = "1111.2222"
CLIENT_SECRET = "sandbox-client-secret"


@dataclass
class Grant:
    """One workspace's (or one enterprise's, org-wide) installation as Slack keeps it."""

    team_id: str | None
    enterprise_id: str | None = None
    org_wide: bool = False
    lifetime: float | None = None  # seconds a token lives (token rotation on), or None (it never expires)
    tokens: dict[str, float | None] = field(default_factory=dict)  # bot token -> expires at (None: never)
    refresh_token: str | None = None
    refreshes: int = 0
    revoked: bool = False
    teams: list[str] = field(default_factory=list)  # org-wide: the workspaces of the org that approved the app


class SlackOAuth:
    """Mixed into SlackStandIn: `grant(...)` makes the code an install's redirect carries; the bot exchanges it."""

    def _init_oauth(self) -> None:
        self.grants: list[Grant] = []
        self._codes: dict[str, Grant] = {}
        self.exchanges: list[dict] = []  # every oauth.v2.access: what it asked and what became of it
        self.dead_token_calls: list[dict] = []  # calls made with an expired or revoked token
        self.roles: dict[str, str] = {}  # user id -> "admin", "owner" or "primary_owner" (anyone else: a member)

    def grant(self, team_id: str | None, *, enterprise_id: str | None = None, org_wide: bool = False,
              lifetime: float | None = None, teams: tuple[str, ...] = ()) -> str:
        """Someone approves the install on Slack's consent page: the code Slack's redirect would carry. `teams`:
        for an org-wide install, the org's workspaces that approved it (what `auth.teams.list` answers)."""
        found = next((g for g in self.grants if (g.team_id, g.enterprise_id, g.org_wide)
                      == (team_id, enterprise_id, org_wide)), None)
        if found is None:
            found = Grant(team_id, enterprise_id, org_wide, lifetime)
            self.grants.append(found)
        found.revoked, found.lifetime = False, lifetime
        found.teams.extend(t for t in teams if t not in found.teams)
        code = secrets.token_hex(12)
        self._codes[code] = found
        return code

    def revoke(self, grant: Grant) -> None:
        """The workspace uninstalled the app: every token of it stops working."""
        grant.revoked = True

    def grant_of(self, token: str) -> Grant | None:
        return next((g for g in self.grants if token in g.tokens), None)

    def owner_of(self, token: str) -> tuple[str | None, str | None] | None:
        """Whose token this is: (team, enterprise) of an install's, None for anything else (the one bot token)."""
        grant = self.grant_of(token)
        return (grant.team_id, grant.enterprise_id) if grant else None

    def _token_state(self, token: str) -> str | None:
        """None for a token that works; else the error Slack gives for it."""
        grant = self.grant_of(token)
        if grant is None:
            return "invalid_auth"
        expires = grant.tokens[token]
        if grant.revoked:
            return "token_revoked"
        if expires is not None and time.time() >= expires:
            return "token_expired"
        return None

    def _new_token(self, grant: Grant) -> dict:
        prefix = "xoxe.xoxb-" if grant.lifetime else "xoxb-"
        token = f"{prefix}{grant.team_id or grant.enterprise_id}-{secrets.token_hex(8)}"
        grant.tokens[token] = time.time() + grant.lifetime if grant.lifetime else None
        out = {"access_token": token, "token_type": "bot"}
        if grant.lifetime:
            grant.refresh_token = f"xoxe-1-{secrets.token_hex(10)}"
            out.update(refresh_token=grant.refresh_token, expires_in=int(grant.lifetime))
        return out

    def _auth_teams_list(self, params: dict) -> dict:
        """The workspaces an org-wide install's token may act in, a page at a time (`limit`, `cursor`)."""
        grant = self.grant_of(params.get("_token") or "")
        if grant is None or not grant.org_wide:
            return {"ok": False, "error": "not_allowed_token_type"}
        try:
            limit, start = int(params.get("limit") or 100), int(params.get("cursor") or 0)
        except ValueError:
            return {"ok": False, "error": "invalid_cursor"}
        if not 0 < limit <= 1000:
            return {"ok": False, "error": "invalid_limit"}
        page = grant.teams[start:start + limit]
        more = start + limit < len(grant.teams)
        return {"ok": True, "teams": [{"id": t, "name": f"Team {t}"} for t in page],
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    def _users_info(self, params: dict) -> dict:
        user_id = str(params.get("user") or "")
        if not user_id.startswith(("U", "W")):
            return {"ok": False, "error": "user_not_found"}
        role = self.roles.get(user_id)
        return {"ok": True, "user": {"id": user_id, "is_admin": role in {"admin", "owner", "primary_owner"},
                                     "is_owner": role in {"owner", "primary_owner"},
                                     "is_primary_owner": role == "primary_owner"}}

    def _oauth_v2_access(self, params: dict, authorization: str = "") -> dict:
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        if authorization.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(authorization[6:]).decode().partition(":")
        record = {"grant_type": params.get("grant_type") or "authorization_code", "at": time.time()}
        with self.lock:
            self.exchanges.append(record)
            if (client_id, client_secret) != (CLIENT_ID, CLIENT_SECRET):
                record["error"] = "invalid_client_id"
                return {"ok": False, "error": "invalid_client_id"}
            if params.get("grant_type") == "refresh_token":
                grant = next((g for g in self.grants if g.refresh_token and g.refresh_token
                              == params.get("refresh_token")), None)
                if grant is None or grant.revoked:
                    record["error"] = "invalid_refresh_token"  # (spent already: Slack revokes it on use)
                    return {"ok": False, "error": "invalid_refresh_token"}
                grant.refreshes += 1
                answer = self._new_token(grant)
                record["team"] = grant.team_id
                return {"ok": True, **answer, "scope": "commands,chat:write"}
            grant = self._codes.pop(str(params.get("code") or ""), None)
            if grant is None:
                record["error"] = "invalid_code"
                return {"ok": False, "error": "invalid_code"}
            answer = self._new_token(grant)
            record["team"] = grant.team_id
        return {
            "ok": True, **answer, "scope": "commands,chat:write,chat:write.public",
            "bot_user_id": bot_user_of(grant),  # (each workspace names the app's bot user its own way)
            "app_id": "A0FINETUNE",
            "team": None if grant.org_wide else {"id": grant.team_id, "name": f"Team {grant.team_id}"},
            "enterprise": {"id": grant.enterprise_id, "name": "Org"} if grant.enterprise_id else None,
            "is_enterprise_install": grant.org_wide, "authed_user": {"id": "U0INSTALLER"},
        }


def bot_user_of(grant: Grant) -> str:
    """The bot user id Slack gives an install: one of each workspace's (or org's) own."""
    return "UFTB" + str(grant.team_id or grant.enterprise_id or "").upper()[-8:]


def event_body(event: dict, *, team_id: str | None, enterprise_id: str | None = None,
               org_wide: bool = False) -> str:
    """An Events API callback, as Slack sends it (JSON, signed like every request)."""
    return json.dumps({
        "token": "deprecated-verification-token", "team_id": team_id, "enterprise_id": enterprise_id,
        "api_app_id": "A0FINETUNE", "event": {**event, "event_ts": f"{time.time():.6f}"}, "type": "event_callback",
        "event_id": f"Ev{secrets.token_hex(5).upper()}", "event_time": int(time.time()),
        "is_enterprise_install": org_wide,
        "authorizations": [{"enterprise_id": enterprise_id, "team_id": team_id, "user_id": "UFINETUNEBOT",
                            "is_bot": True, "is_enterprise_install": org_wide}],
    })
