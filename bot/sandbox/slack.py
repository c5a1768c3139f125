"""A loopback stand-in for Slack: the Web API the real `slack_sdk` client calls, response URLs, and signed requests.

The shell uses it to show what the bot posts; the tests use it to assert what reached Slack.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

from bot.sandbox.http import Answer, Fault, Received, StandInServer, json_answer

BOT_USER_ID = "UFINETUNEBOT"
TEAM_ID = "T0SANDBOX"


class SlackStandIn(StandInServer):
    """Records posts (`posted`) and slash-command replies (`responses`); refuses on demand."""

    def __init__(self, *, token: str | None = None, history_scope: bool = True) -> None:
        super().__init__()
        self.token = token
        self.app_token: str | None = None  # apps.connections.open answers only to this one
        self.socket_mode_url: str | None = None
        self.history_scope = history_scope
        self.posted: list[dict] = []
        self.responses: list[dict] = []
        self.channel_errors: dict[str, str] = {}  # channel -> error chat.postMessage answers with
        self.invisible_channels: set[str] = set()  # private channels the bot is not in
        self.listeners: list[Callable[[str, dict], None]] = []  # called with ("post" | "response", record)
        self._ts = itertools.count(1)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, name: str = "cmd") -> str:
        """A response_url shaped as Slack's are (…/commands/TEAM/ID/SECRET), ending in `name`."""
        return f"{self.url}/commands/{TEAM_ID}/{secrets.randbelow(10**12)}/{name}"

    def fault_answer(self, fault: Fault) -> Answer:
        if fault.status == 429:
            return json_answer(429, {"ok": False, "error": "ratelimited"},
                               {"retry-after": str(int(fault.retry_after or 1))})
        return super().fault_answer(fault)

    def messages_in(self, channel: str) -> list[dict]:
        with self.lock:
            return [p for p in self.posted if p["channel"] == channel]

    def _notify(self, kind: str, record: dict) -> None:
        for listener in list(self.listeners):
            listener(kind, record)

    def answer(self, request: Received) -> Answer:
        if request.path.startswith(("/commands/", "/actions/")):
            record = {**request.json(), "url": request.path, "at": time.time()}
            with self.lock:
                self.responses.append(record)
            self._notify("response", record)
            return 200, {"content-type": "text/plain"}, b"ok"
        method = request.path.removeprefix("/api/")
        auth = request.headers.get("authorization", "")
        if method == "apps.connections.open":
            if self.socket_mode_url and auth == f"Bearer {self.app_token}":
                return json_answer(200, {"ok": True, "url": self.socket_mode_url})
            return json_answer(200, {"ok": False, "error": "invalid_auth"})
        if self.token is not None and auth != f"Bearer {self.token}":
            return json_answer(200, {"ok": False, "error": "invalid_auth"})
        params = request.params()
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return json_answer(200, {"ok": False, "error": "unknown_method"})
        return json_answer(200, handler(params))

    def _auth_test(self, params: dict) -> dict:
        return {"ok": True, "url": "https://sandbox.slack.invalid/", "team": "Sandbox", "user": "finetune-bot",
                "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": "BFINETUNEBOT"}

    def _chat_postMessage(self, params: dict) -> dict:
        channel = params.get("channel", "")
        if channel in self.channel_errors:
            return {"ok": False, "error": self.channel_errors[channel]}
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        record = {
            "channel": channel,
            "ts": ts,
            "text": params.get("text", ""),
            "blocks": _maybe_json(params.get("blocks")),
            "metadata": _maybe_json(params.get("metadata")),
            "at": time.time(),
        }
        with self.lock:
            self.posted.append(record)
        self._notify("post", record)
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": record["text"]}}

    def _conversations_info(self, params: dict) -> dict:
        channel = params.get("channel", "")
        if channel in self.invisible_channels:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": {"id": channel, "is_private": channel.startswith("G"), "is_member": True}}

    def _conversations_history(self, params: dict) -> dict:
        if not self.history_scope:
            return {"ok": False, "error": "missing_scope", "needed": "channels:history"}
        oldest = float(params.get("oldest") or 0)
        messages = [
            {"ts": p["ts"], "text": p["text"], "metadata": p["metadata"], "bot_id": "BFINETUNEBOT"}
            for p in reversed(self.messages_in(params.get("channel", "")))
            if float(p["ts"].split(".")[0]) >= int(oldest)
        ]
        return {"ok": True, "messages": messages[: int(params.get("limit") or 100)], "has_more": False}


def _maybe_json(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def slash_command_body(
    text: str,
    *,
    channel_id: str = "C0GENERAL",
    channel_name: str = "general",
    user_id: str = "U0ALICE",
    user_name: str = "alice",
    team_id: str = TEAM_ID,
    response_url: str = "",
    command: str = "/finetune",
    trigger_id: str | None = None,
) -> str:
    """A slash-command payload, form-encoded, as Slack sends it."""
    return urlencode(
        {
            "token": "deprecated-verification-token",
            "team_id": team_id,
            "team_domain": "sandbox",
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": "A0FINETUNE",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id or new_trigger_id(),
        }
    )


def block_action_body(
    action_id: str,
    value: str,
    *,
    channel_id: str = "C0GENERAL",
    user_id: str = "U0ALICE",
    team_id: str = TEAM_ID,
    response_url: str = "",
) -> str:
    """A button click (`block_actions`), form-encoded with its JSON in `payload`, as Slack sends it."""
    payload = {
        "type": "block_actions",
        "team": {"id": team_id, "domain": "sandbox"},
        "user": {"id": user_id, "username": "alice", "team_id": team_id},
        "api_app_id": "A0FINETUNE",
        "channel": {"id": channel_id, "name": "general"},
        "container": {"type": "message", "message_ts": "1.000001", "channel_id": channel_id},
        "trigger_id": new_trigger_id(),
        "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b1", "value": value,
                     "action_ts": str(time.time())}],
    }
    return urlencode({"payload": json.dumps(payload)})


def new_trigger_id() -> str:
    """A trigger_id as Slack makes them: different for every command and click."""
    return f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"


def signed_headers(body: str, signing_secret: str, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with a request: its timestamp and the v0 HMAC signature over it and the body."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=str(timestamp), body=body)
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": str(timestamp),
        "x-slack-signature": signature,
    }
