"""Posting to Slack through the Web API, with Slack's answers sorted into: done, try later, or never."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import BinaryIO

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot import metrics
from bot.messages.blocks import Message
from bot.retry_after import retry_after_seconds
from bot.scrub import Scrubber

log = logging.getLogger(__name__)

# Slack's answers that another try may change. Every other error it names (channel_not_found, is_archived,
# invalid_blocks, msg_too_long, msg_blocks_too_long, invalid_arguments, …) is for good: retrying only repeats it.
TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout", "team_added_to_org"})
# Refusals of the message's content: the plain text alone may still go through.
CONTENT_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_too_long", "msg_blocks_too_long",
                            "too_many_blocks"})
# Answers meaning a card (or its thread) is gone for good: deleted, or no longer the bot's to edit.
CARD_GONE_ERRORS = frozenset({"message_not_found", "thread_not_found", "cant_update_message", "edit_window_closed",
                              "cant_broadcast_message"})
ANNOUNCEMENT_EVENT = "finetune_bot_announcement"
VIEW_SETTLE_SECONDS = 1.0
DOWNLOAD_CHUNK = 1024 * 1024
DOWNLOAD_DEADLINE_SECONDS = 120.0  # a whole download, however slowly its bytes come (DOWNLOAD_DEADLINE_SECONDS)
# Where Slack serves shared files (files.slack.com; GovSlack's files.slack-gov.com): the only hosts given the token.
SLACK_FILE_DOMAINS = ("slack.com", "slack-gov.com")
SPOOL_IN_MEMORY = 8 * 1024 * 1024  # a downloaded file larger than this waits on disk, not in memory


class FileUnavailable(Exception):
    """A file shared in Slack that the bot cannot fetch; the message says why, in words for the person."""


class SlackFailure(Exception):
    def __init__(self, reason: str, *, permanent: bool, retry_after: float | None = None, ambiguous: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after
        self.ambiguous = ambiguous  # Slack may have posted although we got no answer


UNREACHABLE = "unreachable: "  # a reply that never reached Slack: Slack refused nothing
STOPPING = "The bot is restarting, so I stopped fetching the file; try again in a moment."


class NoHistoryAccess(Exception):
    """The bot may not read the channel's history, so it cannot check whether a post already landed."""


class SlackGateway:
    def __init__(self, client: WebClient, *, scrub: Scrubber | None = None,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic,
                 tokens: Callable[[dict], str | None] | None = None,
                 bot_users: Callable[[str | None], str | None] | None = None) -> None:
        self.client = client
        self.bot_users = bot_users  # OAuth mode: the bot's user id in the workspace of a channel (each has its own)
        # OAuth mode: the token each call carries, from the workspace it concerns (bot/installs.py); None for a
        # workspace that is not (or no longer) installed, whose calls then fail here without reaching Slack.
        self.tokens = tokens
        self._sleep, self._monotonic = sleep, monotonic
        self.scrub = scrub or Scrubber()
        self._bot_user_id: str | None = None
        self._bot_user_lock = threading.Lock()
        # Downloads under way, so that a stop can end them at once rather than at their deadline.
        self._downloads: set = set()
        self._downloads_lock = threading.Lock()
        self._stopping = threading.Event()

    def stop_downloads(self) -> int:
        """End every download under way now (their connections shut), and refuse new ones: for a stop, which must
        not wait out a slow file host's deadline. Returns how many were ended."""
        self._stopping.set()
        with self._downloads_lock:
            responses = list(self._downloads)
        for response in responses:
            try:  # shutdown acts on the connection whichever descriptor names it: the blocked read returns at once
                with socket.socket(fileno=os.dup(response.fileno())) as conn:
                    conn.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass  # (already closed)
        return len(responses)

    def post(self, channel: str, message: Message, *, key: str | None = None, thread_ts: str | None = None,
             broadcast: bool = False) -> str:
        """Post a message (in a thread, with `thread_ts`; also shown in the channel, with `broadcast`); returns its
        ts. Tagged with `key` in message metadata so it can be found again (a broadcast reply is in the channel's
        history too).

        Everything posted is scrubbed first: a provider's error text that quotes a key never reaches a channel."""
        kwargs = {"channel": channel, "text": self.scrub(message.text), "blocks": self.scrub.deep(message.blocks),
                  "unfurl_links": False}
        if thread_ts:
            kwargs.update(thread_ts=thread_ts, reply_broadcast=broadcast)
        if key:
            kwargs["metadata"] = {"event_type": ANNOUNCEMENT_EVENT, "event_payload": {"key": key}}
        response = self._call("chat_postMessage", **kwargs)
        return str(response.get("ts"))

    def update(self, channel: str, ts: str, message: Message) -> None:
        """Edit a message the bot posted (a job's card) in place, scrubbed like a post."""
        self._call("chat_update", channel=channel, ts=ts, text=self.scrub(message.text),
                   blocks=self.scrub.deep(message.blocks))

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

    def post_quietly(self, channel: str, message: Message) -> str | None:
        """Post something useful but not owed (no outbox): a failure is logged, not raised."""
        try:
            return self.post(channel, message)
        except SlackFailure as failure:
            log.warning("could not post to %s: %s", channel, failure.reason)
            return None

    def reply(self, response_url: str, message: Message, *, replace_original: bool = False) -> bool:
        """Answer a command or click through its response_url; False (and logged) when Slack refused the answer.

        Slack refusing a reply (too long, bad blocks) must not leave the person with nothing: the plain text is sent
        in its place, with a line saying the full answer could not be shown."""
        kwargs = {**self.scrub.deep(message.reply_kwargs()), "replace_original": replace_original}
        refusal = self._send_reply(response_url, kwargs)
        if refusal is None:
            return True
        if refusal.startswith(UNREACHABLE):
            log.warning("could not reach Slack to send a reply (%s)", refusal.removeprefix(UNREACHABLE))
            return False
        log.warning("Slack refused a reply (%s); sending a short one instead", refusal)
        short = {"text": kwargs["text"][:2000] + f"\n(I couldn't show the full answer: Slack said {refusal}.)",
                 "response_type": "ephemeral", "replace_original": False}
        return self._send_reply(response_url, short) is None

    def _send_reply(self, response_url: str, kwargs: dict) -> str | None:
        """None when Slack took the reply, else why not (starting with UNREACHABLE when Slack was never reached)."""
        try:
            response = WebhookClient(response_url, timeout=10, retry_handlers=[]).send(**kwargs)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            return f"{UNREACHABLE}{type(exc).__name__}"
        body = (response.body or "").strip()
        refused = '"ok":false' in body.replace(" ", "")
        if response.status_code == 200 and not refused:
            return None
        return _error_word(body) or f"http_{response.status_code}"

    def bot_user_id(self, channel: str | None = None) -> str | None:
        """The bot's own user id (so messages can name the app as this workspace named it); None if Slack won't say.

        Asked once, lazily, never before an ack: start-up does not wait on Slack. In OAuth mode, the one Slack gave
        the install of `channel`'s workspace (or the request's)."""
        if self.bot_users is not None:
            return self.bot_users(channel)
        with self._bot_user_lock:
            if self._bot_user_id is None:
                try:
                    self._bot_user_id = str(self._call("auth_test").get("user_id") or "") or None
                except SlackFailure as failure:
                    log.info("could not learn the bot's user id (%s)", failure.reason)
            return self._bot_user_id

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

    # -- modals and files ------------------------------------------------------------------------------

    def publish_home(self, user_id: str, view: dict) -> None:
        """Show `view` as a person's App Home (views.publish; `user_id` also says whose workspace it is)."""
        self._call("views_publish", user_id=user_id, view=self.scrub.deep(view))

    def open_view(self, trigger_id: str, view: dict) -> str:
        """Open a modal for the person whose command or click carried `trigger_id` (valid for 3 s); its view id."""
        return str(self._call("views_open", trigger_id=trigger_id, view=self.scrub.deep(view))["view"]["id"])

    def update_view(self, view_id: str, view: dict, *, answered_at: float | None = None) -> None:
        """Replace a modal. With `answered_at` (time.monotonic() when a submission was answered with a 'busy' view),
        not sooner than VIEW_SETTLE_SECONDS after it: Slack applies that answer when it receives it, and an update
        arriving first would be covered by it."""
        if answered_at is not None:
            self._sleep(max(0.0, answered_at + VIEW_SETTLE_SECONDS - self._monotonic()))
        self._call("views_update", view_id=view_id, view=self.scrub.deep(view))

    def file_info(self, file_id: str) -> dict:
        """What Slack knows of a shared file (name, size, download address); FileUnavailable when it won't say."""
        try:
            return dict(self._call("files_info", file=file_id).get("file") or {})
        except SlackFailure as failure:
            words = {"file_not_found": "it no longer exists (deleted?)", "file_deleted": "it was deleted",
                     "missing_scope": "the app lacks the files:read permission (reinstall it from manifest.yml)"}
            raise FileUnavailable(f"Slack would not give me the file: {words.get(failure.reason, failure.reason)}."
                                  ) from None

    def download(self, url: str, *, max_bytes: int, timeout: float = 30.0,
                 deadline_seconds: float = DOWNLOAD_DEADLINE_SECONDS) -> BinaryIO:
        """A shared file's bytes, fetched with the bot token, as a stream (in memory when small, on disk when not);
        refused past `max_bytes` without reading on, and past `deadline_seconds` however slowly the bytes come.

        The address comes from Slack's answer, so it is not trusted: only Slack's own file hosts over https (and the
        origin of SLACK_API_URL, for a proxy or a stand-in) are asked, and the token goes to nothing else. A redirect is
        followed only to another of those addresses, and never with the token to another origin."""
        origin = _origin(url)
        if origin is None or not self._may_fetch(origin):
            log.warning("refused to download a file from %s: not one of Slack's file hosts", _shown_origin(url))
            raise FileUnavailable("Slack gave me a download address that is not one of its own file hosts, so I "
                                  "did not fetch it.")
        if self._stopping.is_set():
            raise FileUnavailable(STOPPING)
        deadline = time.monotonic() + deadline_seconds
        opener = urllib.request.build_opener(_SameOriginAuth(origin, self._may_fetch))
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self._download_token()}"})
        try:
            response = opener.open(request, timeout=min(timeout, deadline_seconds))
        except _ForeignRedirect:
            raise FileUnavailable("Slack's download address sent me somewhere that is not one of its file hosts, "
                                  "so I did not follow it.") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise FileUnavailable(f"I could not download the file from Slack ({type(exc).__name__}).") from None
        with self._downloads_lock:
            self._downloads.add(response)
        try:
            return self._read_download(response, max_bytes=max_bytes, deadline=deadline,
                                       deadline_seconds=deadline_seconds)
        finally:
            with self._downloads_lock:
                self._downloads.discard(response)

    def _read_download(self, response, *, max_bytes: int, deadline: float,  # noqa: ANN001 - an http.client response
                       deadline_seconds: float) -> BinaryIO:
        with response:
            if "text/html" in (response.headers.get("content-type") or ""):
                # Slack answers a request it will not serve with its sign-in page, not with an error.
                raise FileUnavailable("Slack would not let me download the file (it sent a sign-in page): the app "
                                      "may lack files:read, or the file is not shared with it.")
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
            read = 0
            try:
                # read1: whatever has arrived, so a host sending a byte at a time is measured against the deadline
                # between pieces, rather than waited on until a whole chunk has come.
                while chunk := response.read1(DOWNLOAD_CHUNK):
                    read += len(chunk)
                    if read > max_bytes:
                        raise FileUnavailable(f"The file is larger than {max_bytes / 1e6:,.0f} MB, the most this "
                                              "bot checks (MAX_TRAINING_FILE_MB).")
                    if time.monotonic() > deadline:
                        raise FileUnavailable(f"Slack took longer than {deadline_seconds:,.0f} s to send the file, "
                                              "so I stopped. Try again in a moment.")
                    spool.write(chunk)
                if self._stopping.is_set():  # (its connection was shut: what arrived is not the whole file)
                    raise FileUnavailable(STOPPING)
            except (http.client.HTTPException, OSError) as exc:
                spool.close()
                if self._stopping.is_set():
                    raise FileUnavailable(STOPPING) from None
                raise FileUnavailable(f"I could not download the file from Slack ({type(exc).__name__}).") from None
            except BaseException:
                spool.close()
                raise
        spool.seek(0)
        return spool  # type: ignore[return-value]

    def _may_fetch(self, origin: tuple[str, str, int]) -> bool:
        """Whether an address may be fetched: Slack's file hosts over https, or SLACK_API_URL's own origin."""
        scheme, host, _ = origin
        if origin == _origin(str(getattr(self.client, "base_url", "") or "")):
            return True
        return scheme == "https" and any(host == h or host.endswith("." + h) for h in SLACK_FILE_DOMAINS)

    def _download_token(self) -> str | None:
        return self.tokens({}) if self.tokens is not None else self.client.token

    def is_admin(self, user_id: str) -> bool:
        """Whether a person is an admin or an owner of their workspace, as users.info says."""
        user = self._call("users_info", user=user_id).get("user") or {}
        return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))

    def open_dm(self, user_id: str) -> str:
        """The id of the bot's direct-message conversation with a person (conversations.open: the same each time)."""
        return str(self._call("conversations_open", users=user_id)["channel"]["id"])

    def upload_png(self, channel: str, filename: str, content: bytes, *, title: str, comment: str | None = None,
                   thread_ts: str | None = None) -> None:
        """Share a picture in a channel (or a message's thread) through Slack's current upload flow
        (files.getUploadURLExternal, the bytes, files.completeUploadExternal: slack_sdk's files_upload_v2)."""
        kwargs = {"channel": channel, "filename": filename, "content": content, "title": title,
                  "initial_comment": self.scrub(comment) if comment else None, "thread_ts": thread_ts}
        self._call("files_upload_v2", **{k: v for k, v in kwargs.items() if v is not None})

    def _call(self, method: str, **kwargs):
        if self.tokens is not None:
            token = self.tokens(kwargs)
            if token is None:
                raise SlackFailure("not_installed", permanent=True)
            kwargs["token"] = token
        try:
            answer = getattr(self.client, method)(**kwargs)
            metrics.inc("slack_calls", method=method, outcome="ok")
            return answer
        except SlackApiError as exc:
            response = exc.response
            status = getattr(response, "status_code", 200)
            error = (response.get("error") if hasattr(response, "get") else None) or f"http_{status}"
            limited = status == 429 or error == "ratelimited"
            metrics.inc("slack_calls", method=method, outcome="ratelimited" if limited else "failed"
                        if status >= 500 or error in TRANSIENT_ERRORS else "refused")
            if limited:
                headers = {k.lower(): v for k, v in (response.headers or {}).items()}
                retry_after = retry_after_seconds(headers.get("retry-after"))
                raise SlackFailure("ratelimited", permanent=False, retry_after=retry_after or 1.0) from None
            if status >= 500:
                raise SlackFailure(f"http_{status}", permanent=False) from None
            raise SlackFailure(error, permanent=error not in TRANSIENT_ERRORS) from None
        except TimeoutError as exc:
            metrics.inc("slack_calls", method=method, outcome="failed")
            raise SlackFailure(f"timeout ({type(exc).__name__})", permanent=False, ambiguous=True) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            metrics.inc("slack_calls", method=method, outcome="failed")
            # A request that was sent and then lost its answer (or got one we cannot read) may have been carried out.
            raise SlackFailure(f"connection error ({type(exc).__name__})", permanent=False, ambiguous=True) from None



def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) address; None for anything else (file:, ftp:, no host)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def _shown_origin(url: str) -> str:
    origin = _origin(url)
    return f"{origin[0]}://{origin[1]}:{origin[2]}" if origin else "an address that is not http(s)"


class _ForeignRedirect(urllib.error.URLError):
    """A redirect to an address we do not fetch from."""


class _SameOriginAuth(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an address we may fetch, and keep the token only while the origin stays the same
    (what requests' should_strip_auth does, made strict: an unknown origin is not asked at all)."""

    def __init__(self, origin: tuple[str, str, int], may_fetch) -> None:  # noqa: ANN001
        self.origin = origin
        self.may_fetch = may_fetch

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 - urllib's signature
        target = _origin(newurl)
        if target is None or not self.may_fetch(target):
            raise _ForeignRedirect(f"redirect to {_shown_origin(newurl)}")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and target != self.origin:
            new.remove_header("Authorization")
        return new


def _error_word(body: str) -> str:
    """Slack's error code from a response_url answer: plain text (`invalid_blocks`) or JSON (`{"error": …}`)."""
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            return str(parsed.get("error") or "")[:100]
    except ValueError:
        pass
    return body[:100]
