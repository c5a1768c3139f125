"""OAuth mode: the app installed in any workspace through Slack's "Add to Slack" flow, each workspace (or, installed
org-wide, each enterprise) with its own bot token, sealed at rest; tokens that rotate are refreshed once per expiry,
whichever replica needs them first; an uninstall forgets the workspace's tokens and keys at once.

slack_sdk supplies the well-kept parts (the authorize URL, the redirect page, the token exchange on WebClient at
SLACK_API_URL); the installation and state stores are ours (storage/workspaces.py), on the bot's own database and
migrations, so that a refresh is claimed in the same database every replica shares."""

from __future__ import annotations

import contextvars
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth import AuthorizeUrlGenerator, RedirectUriPageRenderer

from bot.vault import Vault, VaultError
from storage import DB_ERRORS, Store
from storage.scope import WORKSPACE  # the workspace the work is for: its rows, its token (set at authorize)
from storage.workspaces import workspace_key

log = logging.getLogger(__name__)

# The bot scopes the app asks for when installed: the same list as manifest.yml's (tests/test_installs.py checks).
BOT_SCOPES = ("commands", "chat:write", "chat:write.public", "channels:read", "groups:read", "files:read",
              "files:write", "im:write", "users:read")
STATE_TTL = 600.0  # seconds an "Add to Slack" click may take to come back
# Install states outstanding at once, at most: a flood of GET /slack/install cannot fill the database (each click
# writes one row, kept for STATE_TTL).
MAX_STATES = 10_000
REFRESH_BEFORE = 600.0  # a rotating token is refreshed when it has less than this left (Slack's live 12 hours)
REFRESH_HOLD = 15.0  # how long one process's claim on a refresh lasts (past it, another may try: it died)
REFRESH_WAIT = 10.0  # how long a process whose token has expired waits for another's refresh
ORG_TEAM_PAGES = 50  # pages of `auth.teams.list` (1,000 workspaces each) read for an org-wide install, at most

# The installation a request was admitted with (bot/web.py), so Bolt's authorize does not look it up again.
ADMITTED: contextvars.ContextVar[Authorization | None] = contextvars.ContextVar("admitted", default=None)
NOT_INSTALLED = ("finetune-bot is not installed in this workspace yet. A workspace admin can add it from this bot's "
                 "install page (`/slack/install` on its address).")
NO_INSTALL_NEEDED = {"app_uninstalled", "tokens_revoked"}  # events that come after the tokens are gone


class ContextPool(ThreadPoolExecutor):
    """A thread pool whose tasks run in the context of whoever submitted them (the workspace of their request)."""

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN201 - ThreadPoolExecutor's signature
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


class InstallRefused(Exception):
    """An install that cannot be finished; the message is for the person installing."""


class InstallBusy(InstallRefused):
    """Too many installs under way to begin another now (a flood of the install page)."""


@dataclass(frozen=True)
class Authorization:
    key: str
    enterprise_id: str | None
    team_id: str | None
    bot_token: str
    bot_user_id: str | None
    bot_id: str | None


class Installs:
    """Installs, tokens by workspace (refreshed when they rotate) and uninstalls."""

    def __init__(self, store: Store, vault: Vault, *, client_id: str, client_secret: str, api_url: str,
                 worker_id: str, clock: Callable[[], float] = time.time, redirect_uri: str | None = None) -> None:
        self.store, self.vault = store, vault
        self.client_id, self.client_secret = client_id, client_secret
        self.worker_id, self.clock = worker_id, clock
        self.redirect_uri = redirect_uri
        self.refresh_before = REFRESH_BEFORE
        self.max_states = MAX_STATES
        self.client = WebClient(base_url=api_url, timeout=10, retry_handlers=[])
        # Slack's pages live beside its API: a stand-in or proxy at SLACK_API_URL serves both.
        self.authorize_url = AuthorizeUrlGenerator(
            client_id=client_id, scopes=list(BOT_SCOPES), redirect_uri=redirect_uri,
            authorization_url=api_url.rstrip("/").removesuffix("/api") + "/oauth/v2/authorize")
        self.pages = RedirectUriPageRenderer(install_path="/slack/install", redirect_uri_path="/slack/oauth_redirect")
        self._noted: dict[str, str] = {}  # channel -> workspace, as this process last wrote it
        self._refreshing: set[str] = set()  # installations this process is refreshing aside now
        self._noted_lock = threading.Lock()

    # -- installing ----------------------------------------------------------------------------------

    def begin(self) -> str:
        """The address of Slack's consent page for a new install, with a one-time state kept for STATE_TTL."""
        if self.store.workspaces.states_waiting() >= self.max_states:
            raise InstallBusy("Too many installs are under way right now; try again in a few minutes.")
        state = secrets.token_urlsafe(32)
        self.store.workspaces.issue_state(state, ttl=STATE_TTL)
        return self.authorize_url.generate(state)

    def finish(self, *, code: str | None, state: str | None, error: str | None = None) -> Authorization:
        """Exchange the code Slack sent back for the workspace's tokens and keep them, sealed. InstallRefused (and
        nothing stored) for a missing, forged, expired or reused state, a refusal, or a code Slack will not take."""
        if not state or len(state) > 200 or not self.store.workspaces.consume_state(state):
            raise InstallRefused("This install link has expired or was already used. Start again from the "
                                 "install page.")
        if error or not code:
            raise InstallRefused("The app was not installed (Slack said: "
                                 f"{'access denied' if error == 'access_denied' else 'no code'}).")
        if not self.vault.ready:
            raise InstallRefused("This bot cannot keep tokens yet (its ENCRYPTION_KEYS are not set).")
        try:
            answer = self.client.oauth_v2_access(client_id=self.client_id, client_secret=self.client_secret,
                                                 code=code, redirect_uri=self.redirect_uri)
        except SlackApiError as failure:
            raise InstallRefused(f"Slack did not accept the install ({_error_of(failure)}). Start again from the "
                                 "install page.") from None
        enterprise = answer.get("enterprise") or {}
        team = answer.get("team") or {}
        org_wide = bool(answer.get("is_enterprise_install"))
        token = answer.get("access_token")
        if not token or not (team.get("id") or (org_wide and enterprise.get("id"))):
            raise InstallRefused("Slack's answer to the install had no bot token; nothing was stored.")
        key = workspace_key(enterprise.get("id"), team.get("id"), org_wide=org_wide)
        now = self.clock()
        refresh, expires_in = answer.get("refresh_token"), answer.get("expires_in")
        self.store.workspaces.save_installation({
            "key": key, "enterprise_id": enterprise.get("id"), "team_id": team.get("id"),
            "is_enterprise_install": int(org_wide), "app_id": answer.get("app_id"),
            "bot_user_id": answer.get("bot_user_id"), "bot_id": None, "bot_scopes": answer.get("scope"),
            "bot_token": self.vault.seal(token), "bot_refresh_token": self.vault.seal(refresh) if refresh else None,
            "bot_token_expires_at": now + float(expires_in) if expires_in else None,
            "installer_user_id": (answer.get("authed_user") or {}).get("id"), "installed_at": now,
        })
        teams = self.org_teams(token) if org_wide else [team["id"]]
        adopted = self.store.workspaces.adopt(key, teams)
        log.info("installed in %s%s", key, f" (its {adopted} job(s) followed before are its own)" if adopted else "")
        return Authorization(key, enterprise.get("id"), team.get("id"), token, answer.get("bot_user_id"), None)

    # -- tokens --------------------------------------------------------------------------------------

    def org_teams(self, token: str) -> list[str]:
        """The workspaces an org-wide install may act in, as Slack's `auth.teams.list` says (every page). What was
        read before a failure is kept (adopting is additive: `team_access_granted` brings the rest later)."""
        teams: list[str] = []
        cursor = None
        for _ in range(ORG_TEAM_PAGES):
            try:
                answer = self.client.auth_teams_list(token=token, limit=1000, cursor=cursor)
            except (SlackApiError, OSError) as failure:
                reason = _error_of(failure) if isinstance(failure, SlackApiError) else type(failure).__name__
                log.warning("could not list an org's workspaces (%s): jobs they followed before stay unowned until "
                            "Slack says they granted access", reason)
                break
            teams += [t["id"] for t in answer.get("teams") or [] if isinstance(t, dict) and _team_id(t.get("id"))]
            cursor = (answer.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return teams

    def granted(self, enterprise_id: str | None, team_ids: list) -> int:
        """Workspaces of an org that approved its org-wide install later (`team_access_granted`): the install takes
        the jobs their channels followed before, as at install. How many jobs."""
        key = workspace_key(enterprise_id, None, org_wide=True)
        if not enterprise_id or self.store.workspaces.installation(key) is None:
            return 0
        return self.store.workspaces.adopt(key, [t for t in team_ids if _team_id(t)])

    def authorize(self, enterprise_id: str | None, team_id: str | None) -> Authorization | None:
        """The bot token for a request from this workspace (an org-wide install's, for any workspace of its
        enterprise); None when the app is not installed. Called before the ack: a token due for its refresh but still
        good is used while the refresh runs on a thread of its own (only an expired one waits for Slack)."""
        row = None
        if enterprise_id:
            row = self.store.workspaces.installation(workspace_key(enterprise_id, team_id, org_wide=True))
        if row is None and team_id:
            row = self.store.workspaces.installation(workspace_key(enterprise_id, team_id))
        if row is None:
            return None
        token = self._fresh_token(row, inline=False)
        if token is None:
            return None
        return Authorization(row["key"], row["enterprise_id"], row["team_id"], token, row["bot_user_id"],
                             row["bot_id"])

    def admit(self, body: dict, enterprise_id: str | None, team_id: str | None) -> Authorization | bool:
        """Whether a signed request may go on to Bolt: its workspace's installation (kept for Bolt's authorize), True
        for what needs none (Slack checking the URL, an uninstall's events), False when the app is not installed."""
        if body.get("type") in {"url_verification", "ssl_check"} or (
                (body.get("event") or {}).get("type") in NO_INSTALL_NEEDED):
            return True
        found = self.authorize(enterprise_id, team_id)
        return found if found is not None else False

    def token_for(self, key: str | None) -> str | None:
        """The bot token of the workspace `key` (refreshed if need be), or None if it is not installed."""
        row = self.store.workspaces.installation(key) if key else None
        return self._fresh_token(row) if row else None

    def _fresh_token(self, row: dict, *, inline: bool = True) -> str | None:
        expires_at = row["bot_token_expires_at"]
        if expires_at is None or not row["bot_refresh_token"] or expires_at - self.clock() > self.refresh_before:
            return self._open(row["bot_token"])
        if not inline and expires_at > self.clock():
            self._refresh_aside(row)
            return self._open(row["bot_token"])
        if self.store.workspaces.claim_refresh(row["key"], self.worker_id, token=row["bot_token"],
                                               hold=REFRESH_HOLD):
            fresh = self._refresh(row)
            if fresh is not None:
                return fresh
        if expires_at > self.clock():
            return self._open(row["bot_token"])  # still good (another process is refreshing it, or a refresh failed)
        # Expired and another process is refreshing: wait for what it stores (never post with a dead token).
        deadline = time.monotonic() + REFRESH_WAIT
        while time.monotonic() < deadline:
            now_row = self.store.workspaces.installation(row["key"])
            if now_row is None:
                return None
            if now_row["bot_token"] != row["bot_token"]:
                return self._open(now_row["bot_token"])
            if now_row["refresh_holder"] is None or (now_row["refresh_until"] or 0) <= self.clock():
                return None  # its refresh failed (said in its log): nothing here works until the next one does
            time.sleep(0.05)
        log.warning("the token of %s expired and its refresh did not finish within %.0fs", row["key"],
                    REFRESH_WAIT)
        return None

    def _refresh_aside(self, row: dict) -> None:
        """Refresh a token on a thread of its own (one per installation at a time in this process)."""
        with self._noted_lock:
            if row["key"] in self._refreshing:
                return
            self._refreshing.add(row["key"])

        def run() -> None:
            try:
                self._fresh_token(row)
            except Exception:  # noqa: BLE001 - a thread's last stop: the next use of the token tries again
                log.exception("refreshing the token of %s failed", row["key"])
            finally:
                with self._noted_lock:
                    self._refreshing.discard(row["key"])

        threading.Thread(target=run, name="finetune-refresh", daemon=True).start()

    def _refresh(self, row: dict) -> str | None:
        """Spend the refresh token once (this process holds the claim): the new tokens are stored, sealed."""
        try:
            answer = self.client.oauth_v2_access(client_id=self.client_id, client_secret=self.client_secret,
                                                 grant_type="refresh_token",
                                                 refresh_token=self._open(row["bot_refresh_token"]))
        except SlackApiError as failure:
            log.warning("refreshing the token of %s failed (%s)", row["key"], _error_of(failure))
            self.store.workspaces.release_refresh(row["key"], self.worker_id)
            return None
        token, refresh, expires_in = answer.get("access_token"), answer.get("refresh_token"), answer.get("expires_in")
        if not token or not refresh:
            self.store.workspaces.release_refresh(row["key"], self.worker_id)
            log.warning("Slack's answer to refreshing the token of %s had no token", row["key"])
            return None
        self.store.workspaces.refreshed(row["key"], self.worker_id, token=self.vault.seal(token),
                                        refresh_token=self.vault.seal(refresh),
                                        expires_at=self.clock() + float(expires_in or 43200))
        log.info("refreshed the token of %s", row["key"])
        return token

    def _open(self, sealed: str) -> str | None:
        try:
            return self.vault.open(sealed)
        except VaultError as error:
            log.error("%s", error)
            return None

    # -- channels and uninstalls ------------------------------------------------------------------------

    def note_channel(self, channel_id: str | None, key: str) -> None:
        """Remember which workspace a channel is in (so a post there later uses its token): written when new or
        changed, not at every request."""
        if not channel_id:
            return
        with self._noted_lock:
            if self._noted.get(channel_id) == key:
                return
        try:
            self.store.workspaces.note_channel(channel_id, key)
        except DB_ERRORS as error:
            log.warning("could not note the workspace of a channel (%s)", error)
            return
        with self._noted_lock:
            if len(self._noted) > 50_000:
                self._noted.clear()
            self._noted[channel_id] = key

    def token_for_call(self, kwargs: dict) -> str | None:
        """The token a Slack call should carry: that of the workspace the work is for (the request's, or the job's
        for the scheduler's posts), else of the channel (or person) it names. The work's first: a Slack Connect
        channel is in several workspaces, and a card is edited with the token of the install that posted it."""
        key = WORKSPACE.get()
        if not key:
            channel = kwargs.get("channel") or kwargs.get("channel_id") or kwargs.get("user_id")
            key = self.store.workspaces.workspace_of(channel) if channel else None
        return self.token_for(key)

    def bot_user_for(self, channel: str | None) -> str | None:
        """The bot's user id in the workspace the work is for (else that of `channel`), as its install said."""
        key = WORKSPACE.get() or (self.store.workspaces.workspace_of(channel) if channel else None)
        row = self.store.workspaces.installation(key) if key else None
        return row["bot_user_id"] if row else None

    def uninstalled(self, enterprise_id: str | None, team_id: str | None, *, org_wide: bool) -> dict[str, int]:
        """The app was uninstalled (or its tokens revoked): forget the workspace's tokens and provider keys now."""
        key = workspace_key(enterprise_id, team_id, org_wide=org_wide)
        removed = self.store.workspaces.remove(key)
        log.info("uninstalled from %s: forgot its tokens and keys", key)
        return removed


def _team_id(value: object) -> bool:
    return isinstance(value, str) and value[:1] == "T" and value.isalnum() and len(value) <= 32


def _error_of(failure: SlackApiError) -> str:
    response = failure.response
    return str((response.get("error") if hasattr(response, "get") else None) or "no answer")
