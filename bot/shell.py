"""`finetune-bot shell`: talk to the bot in a terminal, with no Slack and, by default, no provider.

The shell drives the same Bolt app as `serve`: it signs each slash command as Slack would, dispatches it into the
app, and plays Slack's Web API (a loopback stand-in) so it can print every reply and announcement as text.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import secrets
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TextIO

from slack_bolt.request import BoltRequest

from bot.app import build
from bot.commands import Command, parse
from bot.config import Settings
from bot.messages.jobs import TRY_CALLBACK, TRY_OPEN_ACTION
from bot.sandbox.files import FAILING_FILE_ID, SAMPLE_FILE_ID
from bot.sandbox.slack import (
    BOT_USER_ID,
    SlackStandIn,
    block_action_body,
    signed_headers,
    slash_command_body,
    view_action_body,
    view_submission_body,
)
from bot.sandbox.stand_ins import SandboxProviders
from bot.shell_render import buttons_of, render

REPLY_WAIT = 30.0
CARD_WAIT = 10.0  # how long a click waits for a card that is on its way
SHELL_HELP = """Type what you would type in Slack, e.g. /finetune help or /finetune start file-sample
Training data: /finetune check PATH or /finetune upload PATH (a local .jsonl file for Slack's file picker; quote spaces)
Buttons: /click LABEL [JOB_ID] presses a button on the latest card or reply here (of that job), e.g. /click Refresh;
  /click "Try it" [JOB_ID] PROMPT fills the form that button opens with your prompt
Shell commands: /channel NAME (talk in another channel), /user NAME (be someone else), /wait (until every job
  followed here has ended and been announced), /quit. In a command, $JOB1, $JOB2, … stand for the jobs this channel
  follows, in the order it began following them (/finetune move $JOB1 to=PROVIDER)"""
SHELL_COMMANDS = "/finetune …, /click LABEL, /channel NAME, /user NAME, /wait, /quit"
WAIT_LIMIT = 300.0  # /wait gives up after this long
FORM_WAIT = 60.0  # a large file's check, in the shell's own form flow


def _simulated(labels: list[str]) -> str:
    """"Two providers are simulated: OpenAI's shape and Together AI's", for however many shapes there are."""
    count = {1: "One provider is", 2: "Two providers are", 3: "Three providers are"}.get(len(labels),
                                                                                      f"{len(labels)} providers are")
    named = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
    return f"{count} simulated: {named}"


def _opens_a_form(text: str) -> bool:
    command = parse(text)
    return isinstance(command, Command) and (command.name in {"check", "upload"} or (
        command.name == "start" and "training_file" not in command.args))


def channel_id(name: str) -> str:
    return "C" + hashlib.sha1(name.encode()).hexdigest()[:10].upper()


class Shell:
    def __init__(self, settings: Settings, out: TextIO, *, channel: str = "general", user: str = "alice"):
        self.out = out
        self.print_lock = threading.Lock()
        self.channels: dict[str, str] = {BOT_USER_ID: "finetune-bot"}
        self.channel = channel
        self.user = user
        self.slack = SlackStandIn().start()
        self.slack.listeners.append(self._on_slack)
        self.sandbox: SandboxProviders | None = None
        self._tmp = None
        if settings.sandbox:
            self.sandbox = SandboxProviders.start(settings.sandbox_pace_seconds)
            settings = self.sandbox.configure(settings)
        if settings.temporary_database:
            # Sandbox jobs live as long as this shell, so their records do too.
            self._tmp = tempfile.TemporaryDirectory(prefix="finetune-bot-shell-")
            settings = replace(settings, database_path=os.path.join(self._tmp.name, "shell.db"))
        self.signing_secret = secrets.token_hex(16)
        self.settings = replace(settings, slack_bot_token="xoxb-shell-" + secrets.token_hex(8),
                                slack_signing_secret=self.signing_secret, slack_api_url=self.slack.api_url)
        self.bot = build(self.settings)
        self.expected_replies = 0
        self._responses = 0
        self._last_reply: dict[str, dict] = {}  # by channel name: the latest reply only its person saw, with buttons
        self._clicked_reply = False  # whether the last click was on that reply (not a card)
        self._filling_form = False
        self._forms_done: set[str] = set()
        self._arrived: dict[object, int] = {}  # when each card (by ts) and reply (by id) arrived, in order
        self._arrivals = 0
        self._answers = 0  # forms opened and replies come back, of every kind: what a form command waits for

    def say(self, text: str) -> None:
        with self.print_lock:
            print(text, file=self.out, flush=True)

    def banner(self) -> str:
        if self.sandbox is not None:
            provider = (f"Provider: SANDBOX. Jobs are simulated on this machine: no real training, no money spent.\n"
                        f"Training files ready: {SAMPLE_FILE_ID} (succeeds), {FAILING_FILE_ID} (fails validation).\n"
                        f"{_simulated(self.sandbox.labels)} (`/finetune providers`).\n"
                        f"Try: /finetune start {SAMPLE_FILE_ID}   or   /finetune start {SAMPLE_FILE_ID} "
                        f"provider={self.sandbox.names[-1]}\n"
                        "(`finetune-bot shell --real` uses the providers your environment configures instead.)")
        else:
            provider = (f"Provider: {self.settings.provider_name.upper()}. Commands here start REAL jobs, billed to "
                        "your account.")
        return f"finetune-bot shell. You are @{self.user} in #{self.channel}.\n{provider}\n{SHELL_HELP}"

    def _on_slack(self, kind: str, record: dict) -> None:
        if kind == "upload":
            where = self.channels.get(record["channel"], record["channel"])
            thread = " (in the job's thread)" if record.get("thread_ts") else ""
            self.say(f"[#{where}] finetune-bot shared a picture{thread}: {record['title']} "
                     f"({record['filename']}, {len(record['_content']) // 1024} KB PNG)")
            return
        if kind == "view":
            self._answers += record["kind"] == "open"
            if record["kind"] == "open" and not self._filling_form:
                title = record["view"]["title"]["text"]
                hint = ("Its answers show here once it is sent."
                        if record["view"].get("callback_id") == TRY_CALLBACK else
                        "The shell cannot pick files from Slack: use /finetune check PATH or /finetune upload PATH.")
                self.say(f"[#{self.channel}] finetune-bot opened a form (\"{title}\"). {hint}")
            return
        if kind == "response":
            self._responses += 1
            self._answers += 1
            if record.get("replace_original") and self._clicked_reply:
                self._last_reply.pop(self.channel, None)  # the reply clicked is gone, and its buttons with it
            if buttons_of(record):
                self._last_reply[self.channel] = record  # its buttons can be pressed too (Share in channel)
                self._arrivals += 1
                self._arrived[id(record)] = self._arrivals
            who = "everyone" if record.get("response_type") == "in_channel" else "only you"
            did = "replaced the message you clicked" if record.get("replace_original") else f"({who} can see this)"
            self.say(f"[#{self.channel}] finetune-bot {did}:\n{self._indent(record)}")
            return
        where = self.channels.get(record["channel"], record["channel"])
        label = f"DM to @{where}" if record["channel"].startswith(("U", "D")) else f"#{where}"
        if kind == "update":
            self.say(f"[{label}] finetune-bot updated its card of {self._card_job(record)}:\n{self._indent(record)}")
        elif record.get("thread_ts"):
            # A thread reply, indented under its card (and marked when also sent to the channel).
            also = ", also sent to the channel" if record.get("broadcast") else ""
            parent = next((p for p in self.slack.messages_in(record["channel"]) if p["ts"] == record["thread_ts"]),
                          {})
            self.say(f"[{label}]   ↳ reply in the thread of {self._card_job(parent)}{also}:\n"
                     f"{self._indent(record, depth=6)}")
        else:
            self._arrivals += 1
            self._arrived[record.get("ts")] = self._arrivals
            self.say(f"[{label}] finetune-bot posted:\n{self._indent(record)}")

    @staticmethod
    def _card_job(record: Mapping) -> str:
        found = re.search(r"job (\S+) on", record.get("text") or "")
        return found[1] if found else "a message"

    def _indent(self, record: Mapping, depth: int = 2) -> str:
        return "\n".join(" " * depth + line for line in render(record, self.channels).splitlines())

    def handle(self, line: str) -> bool:
        """Act on one line; False when the user asked to quit."""
        line = line.strip()
        if not line:
            return True
        word, _, rest = line.partition(" ")
        if word in {"/quit", "/exit"}:
            return False
        if word in {"/channel", "/user", "/click"} and not rest.strip():
            example = {"/channel": "/channel ml-team", "/user": "/user bob", "/click": "/click Refresh"}[word]
            self.say(f"{word} needs {'a label' if word == '/click' else 'a name'}, e.g. {example}.")
        elif word == "/channel":
            self.channel = rest.strip().lstrip("#")
            self.say(f"Now in #{self.channel}.")
        elif word == "/user":
            self.user = rest.strip().lstrip("@")
            self.say(f"Now you are @{self.user}.")
        elif word == "/wait":
            if not self._wait(self.settled, WAIT_LIMIT):
                self.say(f"Still waiting after {WAIT_LIMIT:g}s; going on.")
        elif word == "/finetune":
            text = self.with_jobs(rest)
            if text is not None:
                self.dispatch(text)
        elif word == "/click":
            self.click_line(rest)
        elif word in {"/help", "/?"}:
            self.say(SHELL_HELP)
        elif word.startswith("/"):
            self.say(f"{word} is not a command here. Try /finetune help, or one of: {SHELL_COMMANDS}.")
        else:
            self.say("The bot only hears slash commands: type /finetune help (plain text goes nowhere in Slack "
                     "either). Shell commands: " + SHELL_COMMANDS + ".")
        return True

    def with_jobs(self, text: str) -> str | None:
        """The command with $JOB1, $JOB2, … replaced by the jobs this channel follows, oldest follow first; None (and
        a word why) when one of them is not there."""
        if "$JOB" not in text:
            return text
        follows = self.bot.services.store.follows.channel_follows(channel_id(self.channel))
        ids = [row["job_id"] for row in sorted(follows, key=lambda row: (row["followed_at"] or 0, row["job_id"]))]
        missing = [int(n) for n in re.findall(r"\$JOB(\d+)", text) if not 1 <= int(n) <= len(ids)]
        if missing:
            self.say(f"$JOB{missing[0]}: #{self.channel} follows {len(ids)} job(s) so far.")
            return None
        return re.sub(r"\$JOB(\d+)", lambda found: ids[int(found[1]) - 1], text)

    def dispatch(self, text: str) -> None:
        words = text.split()
        if len(words) >= 2 and words[0].lower() in {"check", "upload"} and "=" not in words[1]:
            try:  # a path with spaces is quoted, as in a terminal
                words = shlex.split(text)
            except ValueError:
                pass
            self.fill_form(words[0].lower(), words[1], " ".join(words[2:]))
            return
        cid = channel_id(self.channel)
        self.channels[cid] = self.channel
        uid = "U" + hashlib.sha1(self.user.encode()).hexdigest()[:10].upper()
        self.channels[uid] = self.user
        body = slash_command_body(html.escape(text, quote=False), channel_id=cid, channel_name=self.channel,
                                  user_id=uid, user_name=self.user,
                                  response_url=self.slack.response_url(secrets.token_hex(6)))
        answers = self._answers
        response = self.bot.app.dispatch(BoltRequest(body=body, headers=signed_headers(body, self.signing_secret)))
        if response.status != 200:
            self.say(f"(Slack would show an error: the app answered HTTP {response.status})")
        elif response.body:
            ack = json.loads(response.body)
            self.say(f"[#{self.channel}] finetune-bot (only you can see this):\n{self._indent(ack)}")
        elif _opens_a_form(text):  # a form is its own answer (or a reply saying why it cannot open): waited for
            self._wait_for(lambda: self._answers > answers, REPLY_WAIT)
        else:
            self.expected_replies += 1
            self.wait_for_replies(REPLY_WAIT)

    def click_line(self, rest: str) -> None:
        """`/click LABEL [JOB_ID] [PROMPT…]`: a label with spaces is quoted ("Try it"); the words after a label whose
        button opens a form fill that form."""
        try:
            words = shlex.split(rest)
        except ValueError:
            words = rest.split()
        label, more = words[0], words[1:]
        cid = channel_id(self.channel)
        known = {match for c in self.slack.cards_in(cid) for match in re.findall(r"\S+", c.get("text") or "")}
        job_id = more.pop(0) if more and more[0] in known else ""
        self.click(label, job_id, prompt=" ".join(more))

    def click(self, label: str, job_id: str = "", *, prompt: str = "") -> None:
        """Press a button on the latest card or reply in this channel with buttons (of `job_id`, if given), as a
        person would in Slack: a signed block_actions request, through Slack's confirmation dialog when the button
        has one. A button that opens the Try it form gets `prompt` typed into it and sent."""
        cid = channel_id(self.channel)
        if any(a["kind"] == "card" and a["channel_id"] == cid and a["state"] in {"pending", "sending"}
               for a in self.bot.services.store.outbox.announcements()):
            # A card just queued (a start typed a moment ago) is not up yet: as in Slack, a moment later it is.
            self._wait(lambda: not any(a["kind"] == "card" and a["channel_id"] == cid
                                       and a["state"] in {"pending", "sending"}
                                       for a in self.bot.services.store.outbox.announcements()), CARD_WAIT)
        cards = [c for c in self.slack.cards_in(cid) if job_id.strip() in c["text"]]
        reply = self._last_reply.get(self.channel)
        if reply and job_id.strip() not in (reply.get("text") or ""):
            reply = None
        # The newest of the two: the latest card posted, or the latest reply only you could see.
        newest_card = cards[-1:] and [cards[-1]]
        if reply and newest_card and self._arrived.get(id(reply), 0) < self._arrived.get(newest_card[0]["ts"], 0):
            reply = None
        messages = ([reply] if reply else []) + newest_card
        if not messages:
            self.say(f"No card{' of ' + job_id.strip() if job_id.strip() else ''} or reply with buttons in "
                     f"#{self.channel} to click.")
            return
        buttons = [(b, m) for m in messages for b in buttons_of(m)]
        chosen = [(b, m) for b, m in buttons if b["text"]["text"].lower().startswith(label.lower())]
        if not chosen:
            self.say(f"No [{label}] button here; there is " + ", ".join(f"[{b['text']['text']}]"
                                                                      for b, _ in buttons) + ".")
            return
        button, card = chosen[0]
        self._clicked_reply = card is reply
        if button.get("confirm"):
            self.say(f"(Slack asks: \"{button['confirm']['title']['text']}\" {button['confirm']['text']['text']} "
                     f"— you chose [{button['confirm']['confirm']['text']}])")
        where = self._where()
        body = block_action_body(button["action_id"], button.get("value", ""), channel_id=cid,
                                 user_id=where["user_id"], response_url=where["response_url"],
                                 message_ts=card.get("ts", ""))
        self.expected_replies += 1
        response = self.bot.app.dispatch(BoltRequest(body=body, headers=signed_headers(body, self.signing_secret)))
        if response.status != 200:
            self.say(f"(Slack would show an error: the app answered HTTP {response.status})")
            self.expected_replies -= 1
        elif button["action_id"] == TRY_OPEN_ACTION:
            self.expected_replies -= 1  # it opens a form: the answer comes in the form, not as a reply
            self.try_form(prompt)
        else:
            self.wait_for_replies(REPLY_WAIT)

    def try_form(self, prompt: str) -> None:
        """Fill the Try it form just opened with `prompt`, send it, and print the answers it then shows."""
        if not prompt:
            self.say('(The form asks for a prompt: give it after the label, e.g. /click "Try it" What is the '
                     "capital of France?)")
            return
        opened = self._wait(lambda: [r for r in self.slack.view_log if r["kind"] == "open"
                                     and r["view"].get("callback_id") == TRY_CALLBACK
                                     and r["view_id"] not in self._forms_done], 10)
        if not opened:
            return  # refused: the reply already said why
        view = self.slack.views[opened[-1]["view_id"]]
        self._forms_done.add(view["id"])
        values = {"prompt": {"value": {"type": "plain_text_input", "value": prompt}}}
        answer = self._request(view_submission_body(view, values, user_id=self._where()["user_id"]))
        if answer.get("response_action") == "errors":
            self.say(f"[form] {' '.join(answer['errors'].values())}")
            return
        self.slack.answer_to_submission(view["id"], answer)
        done = self._settled_view(view["id"], after=self.slack.views[view["id"]])
        if done is not None:
            self.say(f"[form] {done['title']['text']}:\n{self._indent(done)}")

    def fill_form(self, mode: str, path: str, options: str) -> None:
        """`/finetune check|upload PATH`: the local file stands in for Slack's file picker. The file goes to the Slack
        stand-in, and the form is opened, submitted and (for an upload) confirmed by signed requests, as in Slack."""
        try:
            with open(os.path.expanduser(path), "rb") as local:
                content = local.read(self.settings.max_training_file_bytes + 1)
        except OSError as error:
            self.say(f"Cannot read {path}: {error.strerror or error}")
            return
        file_id = self.slack.add_file(os.path.basename(path), content)
        self._filling_form = True
        try:
            before = len(self.slack.view_log)
            self._request(slash_command_body(f"{mode} {options}".strip(), **self._where()))
            opened = self._wait(lambda: [r for r in self.slack.view_log[before:] if r["kind"] == "open"], 10)
            if not opened:
                return  # refused (the allow-list) or failed: the reply already said why
            view = self.slack.views[opened[-1]["view_id"]]
            values = {"training": {"file": {"type": "file_input", "files": [{"id": file_id}]}}}
            answer = self._request(view_submission_body(view, values, user_id=self._where()["user_id"]))
            self.slack.answer_to_submission(view["id"], answer)
            report = self._settled_view(view["id"])
            if report is None:
                return
            self.say(f"[form] {report['title']['text']}:\n{self._indent(report)}")
            buttons = [e for b in report["blocks"] if b["type"] == "actions" for e in b["elements"]]
            if mode == "upload" and buttons:
                self.say(f"(clicking [{buttons[0]['text']['text']}])")
                self._request(view_action_body(report, buttons[0]["action_id"], buttons[0]["value"],
                                               user_id=self._where()["user_id"]))
                done = self._settled_view(view["id"], after=report)
                if done is not None:
                    self.say(f"[form] {done['title']['text']}:\n{self._indent(done)}")
        finally:
            self._filling_form = False

    def _where(self) -> dict:
        cid = channel_id(self.channel)
        self.channels[cid] = self.channel
        uid = "U" + hashlib.sha1(self.user.encode()).hexdigest()[:10].upper()
        self.channels[uid] = self.user
        return {"channel_id": cid, "channel_name": self.channel, "user_id": uid, "user_name": self.user,
                "response_url": self.slack.response_url(secrets.token_hex(6))}

    def _request(self, body: str) -> dict:
        response = self.bot.app.dispatch(BoltRequest(body=body, headers=signed_headers(body, self.signing_secret)))
        if response.status != 200:
            self.say(f"(Slack would show an error: the app answered HTTP {response.status})")
            return {}
        answer = json.loads(response.body) if response.body else {}
        if answer.get("text"):
            self.say(f"[#{self.channel}] finetune-bot (only you can see this):\n{self._indent(answer)}")
        return answer

    def _settled_view(self, view_id: str, *, after: Mapping | None = None) -> dict | None:
        """The form once its work is done: neither 'busy' nor the view it showed before."""
        def done():
            view = self.slack.views[view_id]
            busy = ":hourglass" in json.dumps(view.get("blocks"))
            return view if not busy and (after is None or view["hash"] != after["hash"]) else None

        found = self._wait(done, FORM_WAIT)
        if found is None:
            self.say("(the form did not finish in time)")
        return found

    @staticmethod
    def _wait(condition, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            time.sleep(0.05)
        return None

    def wait_for_replies(self, timeout: float) -> bool:
        """Wait, as a person would, for the answer to the last command before taking the next."""
        return self._wait_for(lambda: self._responses >= self.expected_replies, timeout)

    @staticmethod
    def _wait_for(done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def settled(self) -> bool:
        store = self.bot.services.store
        return (self._responses >= self.expected_replies and not store.follows.has_active_jobs()
                and not store.outbox.announcements(state="pending") and not store.outbox.announcements(state="sending"))

    def close(self) -> None:
        self.bot.stop(timeout=5)
        self.slack.stop()
        if self.sandbox:
            self.sandbox.stop()
        if self._tmp:
            self._tmp.cleanup()


def run(settings: Settings, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
        timeout: float = 300.0) -> int:
    shell = Shell(settings, stdout)
    interactive = stdin.isatty()
    try:
        shell.bot.start_background()
        shell.say(shell.banner())
        if interactive:
            return _interactive(shell)
        for line in stdin:
            shell.say(f"> {line.rstrip()}")
            if not shell.handle(line):
                return 0
        deadline = time.monotonic() + timeout
        while not shell.settled():
            if time.monotonic() > deadline:
                active = [j["id"] for j in shell.bot.services.store.follows.active_jobs()]
                shell.say(f"Timed out after {timeout:g}s; still running: {', '.join(active) or 'replies not back'}")
                return 1
            time.sleep(0.1)
        return 0
    finally:
        shell.close()


def _interactive(shell: Shell) -> int:
    try:
        import readline  # noqa: F401 - line editing and history for input(), where the platform has it

        history = os.path.expanduser("~/.finetune_bot_history")
        try:
            readline.read_history_file(history)
        except OSError:
            pass
    except ImportError:
        readline = None
    try:
        while True:
            try:
                line = input(f"#{shell.channel} @{shell.user}> ")
            except EOFError:
                return 0
            except KeyboardInterrupt:
                shell.say("")
                continue
            if not shell.handle(line):
                return 0
    finally:
        if readline is not None:
            try:
                readline.write_history_file(history)
            except OSError:
                pass
