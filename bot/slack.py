"""Posting to Slack through the Web API, with Slack's answers sorted into: done, try later, or never."""

from __future__ import annotations

import http.client
import logging
import urllib.error

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.messages import Message

log = logging.getLogger(__name__)

# Slack's answers that no retry will change.
PERMANENT_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed", "account_inactive",
    "token_revoked", "token_expired", "no_permission", "missing_scope", "restricted_action", "team_access_not_granted",
    "ekm_access_denied", "org_login_required", "cannot_reply_to_message", "channel_is_archived",
    "msg_too_long", "invalid_blocks", "invalid_metadata_format", "user_not_found",
})
ANNOUNCEMENT_EVENT = "finetune_bot_announcement"


class SlackFailure(Exception):
    def __init__(self, reason: str, *, permanent: bool, retry_after: float | None = None, ambiguous: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after
        self.ambiguous = ambiguous  # Slack may have posted although we got no answer


class NoHistoryAccess(Exception):
    """The bot may not read the channel's history, so it cannot check whether a post already landed."""


class SlackGateway:
    def __init__(self, client: WebClient) -> None:
        self.client = client

    def post(self, channel: str, message: Message, *, key: str | None = None) -> str:
        """Post a message; returns its ts. Tagged with `key` in message metadata so it can be found again."""
        kwargs = {"channel": channel, "text": message.text, "blocks": message.blocks, "unfurl_links": False}
        if key:
            kwargs["metadata"] = {"event_type": ANNOUNCEMENT_EVENT, "event_payload": {"key": key}}
        response = self._call("chat_postMessage", **kwargs)
        return str(response.get("ts"))

    def find_posted(self, channel: str, key: str, *, oldest: float) -> str | None:
        """The ts of a message we posted with `key` since `oldest`, or None; NoHistoryAccess without the scope."""
        try:
            response = self._call("conversations_history", channel=channel, oldest=str(int(oldest)), limit=200,
                                  include_all_metadata=True)
        except SlackFailure as failure:
            if failure.permanent:
                raise NoHistoryAccess(failure.reason) from None
            raise
        for message in response.get("messages") or []:
            metadata = message.get("metadata") or {}
            if metadata.get("event_type") == ANNOUNCEMENT_EVENT and (metadata.get("event_payload") or {}).get(
                    "key") == key:
                return message.get("ts")
        return None

    def can_post(self, channel: str) -> bool | None:
        """False when the bot cannot see the channel (private and not a member); None when it cannot tell."""
        if channel.startswith(("U", "W")):
            return True
        try:
            info = self._call("conversations_info", channel=channel)
        except SlackFailure as failure:
            if failure.reason == "channel_not_found":
                return False
            return None
        found = info.get("channel") or {}
        if found.get("is_archived"):
            return False
        if found.get("is_private") and not found.get("is_member", True):
            return False
        return True

    def _call(self, method: str, **kwargs):
        try:
            return getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            response = exc.response
            status = getattr(response, "status_code", 200)
            error = (response.get("error") if hasattr(response, "get") else None) or f"http_{status}"
            if status == 429 or error == "ratelimited":
                retry_after = _float(response.headers.get("retry-after") or response.headers.get("Retry-After"))
                raise SlackFailure("ratelimited", permanent=False, retry_after=retry_after or 1.0) from None
            if status >= 500:
                raise SlackFailure(f"http_{status}", permanent=False) from None
            raise SlackFailure(error, permanent=error in PERMANENT_ERRORS) from None
        except TimeoutError as exc:
            raise SlackFailure(f"timeout ({type(exc).__name__})", permanent=False, ambiguous=True) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            # A request that was sent and then lost its answer (or got one we cannot read) may have been carried out.
            raise SlackFailure(f"connection error ({type(exc).__name__})", permanent=False, ambiguous=True) from None


def _float(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
