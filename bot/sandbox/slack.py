"""A loopback stand-in for Slack: the Web API the real `slack_sdk` client calls, response URLs, and signed requests.

The shell uses it to show what the bot posts; the tests use it to assert what reached Slack.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

from bot.sandbox.http import Answer, Fault, Received, StandInServer, json_answer
from bot.sandbox.slack_files import TEAM_ID, SlackFiles, maybe_json
from bot.sandbox.slack_home import SlackHome
from bot.sandbox.slack_oauth import SlackOAuth

BOT_USER_ID = "UFINETUNEBOT"


class SlackStandIn(SlackOAuth, SlackHome, SlackFiles, StandInServer):
    """Records posts (`posted`) and slash-command replies (`responses`); refuses on demand. Its OAuth side (installs,
    tokens per workspace, rotation) is bot/sandbox/slack_oauth.py; its App Home, bot/sandbox/slack_home.py; files people
    share and the app's uploads, bot/sandbox/slack_files.py."""

    def __init__(self, *, token: str | None = None, history_scope: bool = True) -> None:
        super().__init__()
        self.token = token
        self.app_token: str | None = None  # apps.connections.open answers only to this one
        self.socket_mode_url: str | None = None
        self.history_scope = history_scope
        self.posted: list[dict] = []  # every message posted, thread replies included ("thread_ts" says where)
        self.updates: list[dict] = []  # every chat.update: the message's ts and what it became
        self.deleted: set[tuple[str, str]] = set()  # (channel, ts) of messages someone deleted
        self.responses: list[dict] = []
        self.channel_errors: dict[str, str] = {}  # channel -> error chat.postMessage answers with
        self.invisible_channels: set[str] = set()  # private channels the bot is not in
        self.listeners: list[Callable[[str, dict], None]] = []  # ("post" | "response" | "view", record)
        self.views: dict[str, dict] = {}  # view id -> the view as last opened or updated
        self.view_log: list[dict] = []  # every views.open and views.update, in order
        self.files: dict[str, dict] = {}  # files people shared with the app, by id
        self.file_reads: list[dict] = []  # every files.info and download: the file, and whose token asked
        self.uploads: list[dict] = []  # files the app uploaded and shared (files.completeUploadExternal)
        self._pending_uploads: dict[str, dict] = {}
        self._ts = itertools.count(1)
        self._init_oauth()
        self._init_home()

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
        """Everything posted in a channel, thread replies included."""
        with self.lock:
            return [p for p in self.posted if p["channel"] == channel]

    def shown_in(self, channel: str) -> list[dict]:
        """What the channel itself shows: top-level messages and replies also sent to the channel, not deleted."""
        with self.lock:
            return [p for p in self.posted if p["channel"] == channel and (not p["thread_ts"] or p["broadcast"])
                    and (channel, p["ts"]) not in self.deleted]

    def outcomes_in(self, channel: str) -> list[dict]:
        """The outcome announcements posted in a channel (in a card's thread or not), by their metadata key."""
        return [p for p in self.messages_in(channel)
                if str(((p["metadata"] or {}).get("event_payload") or {}).get("key", "")).rsplit(":", 1)[-1]
                in {"succeeded", "failed", "cancelled"}]

    def cards_in(self, channel: str) -> list[dict]:
        """The job cards posted in a channel, as they are now (edits applied)."""
        return [p for p in self.messages_in(channel)
                if str(((p["metadata"] or {}).get("event_payload") or {}).get("key", "")).endswith(":card")]

    def thread(self, channel: str, ts: str) -> list[dict]:
        """The replies in a message's thread, oldest first."""
        with self.lock:
            return [p for p in self.posted if p["channel"] == channel and p["thread_ts"] == ts]

    def delete_message(self, channel: str, ts: str) -> None:
        """Someone deletes a message: it can no longer be edited or replied to."""
        with self.lock:
            self.deleted.add((channel, ts))

    def _notify(self, kind: str, record: dict) -> None:
        for listener in list(self.listeners):
            listener(kind, record)

    def answer(self, request: Received) -> Answer:
        if request.path.startswith("/files-pri/"):
            return self._download(request)
        if request.path.startswith("/oauth/v2/authorize"):  # Slack's consent page (a test approves with grant())
            return 200, {"content-type": "text/html; charset=utf-8"}, b"<html>Allow finetune-bot?</html>"
        if request.path.startswith("/upload-ext/") and request.method == "POST":
            # Step 2 of Slack's upload: the bytes, posted to the address step 1 gave.
            pending = self._pending_uploads.get(request.path.rsplit("/", 1)[-1])
            if pending is None:
                return 404, {"content-type": "text/plain"}, b"Not Found"
            pending["_content"] = request.body
            return 200, {"content-type": "text/plain"}, b"OK - " + str(len(request.body)).encode()
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
        if method == "oauth.v2.access":
            return json_answer(200, self._oauth_v2_access(request.params(), auth))
        bearer = auth.removeprefix("Bearer ")
        if self.token is not None and bearer != self.token:
            refused = self._token_state(bearer)
            if refused is not None:
                if refused != "invalid_auth":
                    with self.lock:
                        self.dead_token_calls.append({"method": method, "error": refused, "at": time.time()})
                return json_answer(200, {"ok": False, "error": refused})
        params = {**request.params(), "_token": bearer}
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
        thread_ts = params.get("thread_ts") or None
        if thread_ts and not self._exists(channel, thread_ts):
            return {"ok": False, "error": "thread_not_found"}
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        record = {
            "channel": channel,
            "ts": ts,
            "text": params.get("text", ""),
            "blocks": maybe_json(params.get("blocks")),
            "metadata": maybe_json(params.get("metadata")),
            "thread_ts": thread_ts,
            "broadcast": bool(thread_ts) and str(params.get("reply_broadcast")).lower() in {"true", "1"},
            "at": time.time(),
            "by": self.owner_of(params.get("_token") or ""),  # whose token posted it: (team, enterprise)
        }
        with self.lock:
            self.posted.append(record)
        self._notify("post", record)
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": record["text"]}}

    def _exists(self, channel: str, ts: str) -> bool:
        with self.lock:
            return (channel, ts) not in self.deleted and any(
                p["channel"] == channel and p["ts"] == ts and not p["thread_ts"] for p in self.posted)

    def _chat_update(self, params: dict) -> dict:
        channel, ts = params.get("channel", ""), str(params.get("ts") or "")
        if channel in self.channel_errors:
            return {"ok": False, "error": self.channel_errors[channel]}
        if not self._exists(channel, ts):
            return {"ok": False, "error": "message_not_found"}
        blocks = maybe_json(params.get("blocks"))
        if isinstance(blocks, list) and len(blocks) > 50:
            return {"ok": False, "error": "invalid_blocks"}
        with self.lock:
            [record] = [p for p in self.posted if p["channel"] == channel and p["ts"] == ts]
            if record["by"] != self.owner_of(params.get("_token") or ""):
                return {"ok": False, "error": "cant_update_message"}  # (only its author edits a message: each
                #  install has a bot user of its own)
            record.update(text=params.get("text", ""), blocks=blocks, edited=record.get("edited", 0) + 1)
            update = {"channel": channel, "ts": ts, "text": record["text"], "blocks": blocks, "at": time.time()}
            self.updates.append(update)
        self._notify("update", {**record, "at": update["at"]})
        return {"ok": True, "channel": channel, "ts": ts, "text": record["text"]}

    # -- modals ----------------------------------------------------------------------------------------

    def _views_open(self, params: dict) -> dict:
        trigger = str(params.get("trigger_id") or "")
        if not re.fullmatch(r"\d+\.\d+\.[0-9a-f]{32}", trigger):
            return {"ok": False, "error": "invalid_trigger_id"}
        if time.time() - int(trigger.split(".")[0]) > 3:
            return {"ok": False, "error": "expired_trigger_id"}  # Slack's 3 seconds
        view = maybe_json(params.get("view")) or {}
        view_id = f"V{secrets.token_hex(5).upper()}"
        return self._record_view("open", view_id, view, trigger_id=trigger,
                                 by=self.owner_of(params.get("_token") or ""))

    def _views_update(self, params: dict) -> dict:
        view_id = str(params.get("view_id") or "")
        if view_id not in self.views:
            return {"ok": False, "error": "not_found"}
        return self._record_view("update", view_id, maybe_json(params.get("view")) or {})

    def answer_to_submission(self, view_id: str, answer: dict) -> None:
        """Do what Slack does with the answer to a view submission: `update` replaces the modal."""
        if answer.get("response_action") == "update":
            self._record_view("update", view_id, answer["view"])

    def _record_view(self, kind: str, view_id: str, view: dict, **extra) -> dict:
        if len(view.get("blocks") or []) > 100:
            return {"ok": False, "error": "invalid_arguments"}
        stored = {**view, "id": view_id, "hash": secrets.token_hex(8), "state": {"values": {}}}
        record = {"kind": kind, "view_id": view_id, "view": stored, "at": time.time(), **extra}
        with self.lock:
            self.views[view_id] = stored
            self.view_log.append(record)
        self._notify("view", record)
        return {"ok": True, "view": stored}

    def _conversations_open(self, params: dict) -> dict:
        user = str(params.get("users") or "")
        if not re.fullmatch(r"[UW][A-Z0-9]+", user):
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "channel": {"id": "D" + user[1:]}}

    def _conversations_info(self, params: dict) -> dict:
        channel = params.get("channel", "")
        if channel in self.invisible_channels:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": {"id": channel, "is_private": channel.startswith("G"), "is_member": True}}

    def _conversations_history(self, params: dict) -> dict:
        if not self.history_scope:
            return {"ok": False, "error": "missing_scope", "needed": "channels:history"}
        oldest = float(params.get("oldest") or 0)
        # As Slack's history: top-level messages and replies also sent to the channel, not other thread replies.
        messages = [
            {"ts": p["ts"], "text": p["text"], "metadata": p["metadata"], "bot_id": "BFINETUNEBOT",
             **({"thread_ts": p["thread_ts"], "subtype": "thread_broadcast"} if p["thread_ts"] else {})}
            for p in reversed(self.shown_in(params.get("channel", "")))
            if float(p["ts"].split(".")[0]) >= int(oldest)
        ]
        return {"ok": True, "messages": messages[: int(params.get("limit") or 100)], "has_more": False}


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
    enterprise_id: str | None = None,
) -> str:
    """A slash-command payload, form-encoded, as Slack sends it (from a workspace of an enterprise, with
    `enterprise_id`)."""
    return urlencode(
        {
            **({"enterprise_id": enterprise_id} if enterprise_id else {}),
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
    message_ts: str = "1.000001",
) -> str:
    """A button click (`block_actions`), form-encoded with its JSON in `payload`, as Slack sends it."""
    payload = {
        "type": "block_actions",
        "team": {"id": team_id, "domain": "sandbox"},
        "user": {"id": user_id, "username": "alice", "team_id": team_id},
        "api_app_id": "A0FINETUNE",
        "channel": {"id": channel_id, "name": "general"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id},
        "trigger_id": new_trigger_id(),
        "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b1", "value": value,
                     "action_ts": str(time.time())}],
    }
    return urlencode({"payload": json.dumps(payload)})


def view_submission_body(view: dict, values: dict, *, user_id: str = "U0ALICE", team_id: str = TEAM_ID) -> str:
    """A modal's submission (`view_submission`), as Slack sends it: `values` is {block_id: {action_id: value}}."""
    payload = {
        "type": "view_submission",
        "team": {"id": team_id, "domain": "sandbox"},
        "user": {"id": user_id, "username": "alice", "team_id": team_id},
        "api_app_id": "A0FINETUNE",
        "trigger_id": new_trigger_id(),
        "view": {**view, "state": {"values": values}},
    }
    return urlencode({"payload": json.dumps(payload)})


def view_action_body(view: dict, action_id: str, value: str, *, user_id: str = "U0ALICE",
                     team_id: str = TEAM_ID) -> str:
    """A button clicked inside a modal (`block_actions` with a view and no channel), as Slack sends it."""
    payload = {
        "type": "block_actions",
        "team": {"id": team_id, "domain": "sandbox"},
        "user": {"id": user_id, "username": "alice", "team_id": team_id},
        "api_app_id": "A0FINETUNE",
        "container": {"type": "view", "view_id": view["id"]},
        "trigger_id": new_trigger_id(),
        "view": view,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "confirm", "value": value,
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
