"""`/finetune keys`: a workspace's admins and owners (as users.info says, or whom ADMIN_USER_IDS names) set, replace
or remove the workspace's own provider keys in a form. The form's fields are checked in the ack (no I/O); who sent it
is checked again, and the key sealed and stored, after the ack. A key is never shown, logged or stored in the clear."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from bot.commands import Command
from bot.installs import WORKSPACE
from bot.keyring import Keyring, optional_secrets, settable
from bot.messages.answers import format_note
from bot.messages.blocks import Message
from bot.messages.keys import KEY_MAX_LENGTH, keys_form_view, keys_lines
from bot.providers.types import provider_label
from bot.slack import SlackGateway
from bot.vault import VaultError
from bot.webhooks import webhook_path

if TYPE_CHECKING:
    from bot.jobs import Caller

log = logging.getLogger(__name__)

SETTING = re.compile(r"[A-Za-z0-9._-]{1,100}")  # a setting that goes with a key (Fireworks' account id)

ONE_WORKSPACE = ("This bot serves one workspace, so its provider keys are the ones set where it runs "
                 "(OPENAI_API_KEY and the like), not here.")
NOT_AN_ADMIN = ("Only this workspace's admins and owners (or whom the bot's ADMIN_USER_IDS names) can change its "
                "provider keys.")


class KeyService:
    def __init__(self, keyring: Keyring | None, slack: SlackGateway, *, admins: frozenset[str]) -> None:
        self.keyring = keyring  # None: a bot of one workspace (its keys are the environment's)
        self.slack = slack
        self.admins = admins

    def may_change(self, user_id: str) -> bool:
        return user_id in self.admins or self.slack.is_admin(user_id)

    def run(self, command: Command, caller: Caller) -> Message:
        """Anywhere but Slack (the shell): the keys are a form, opened by `/finetune keys` in Slack."""
        return format_note(ONE_WORKSPACE if self.keyring is None else
                           "Type `/finetune keys` in Slack: the keys are set in a form there.", emoji=":key:")

    def open_form(self, caller: Caller, trigger_id: str) -> str | None:
        """Open the form for an admin (after the command's ack); otherwise, why not."""
        workspace = WORKSPACE.get()
        if self.keyring is None or not workspace:
            return ONE_WORKSPACE
        if not self.may_change(caller.user_id):
            return NOT_AN_ADMIN
        providers = settable()
        shared = ([p.name for p in self.keyring.shared or []] if self.keyring.shares_with(workspace) else [])
        lines = keys_lines(providers, self.keyring.store.workspaces.keys(workspace), shared)
        self.slack.open_view(trigger_id, keys_form_view(settable=providers, lines=lines, metadata="",
                                                          secrets=optional_secrets()))
        return None

    @staticmethod
    def read_form(view: dict) -> tuple[dict[str, str], dict | None]:
        """The form's answers, and the errors to show under its fields (None when there are none). In the ack:
        no I/O, so that a mistake is shown at once."""
        values = (view.get("state") or {}).get("values") or {}

        def text(block: str) -> str:
            return str(((values.get(block) or {}).get("value") or {}).get("value") or "").strip()

        chosen = ((values.get("provider") or {}).get("value") or {}).get("selected_option") or {}
        provider = str(chosen.get("value") or "")
        providers = settable()
        if provider not in providers:
            return {}, {"provider": "Pick one of the providers listed."}
        names = providers[provider]
        answers = {"provider": provider, names[0]: text("key")}
        key = answers[names[0]]
        if key and not _secret_shaped(key):  # (a key goes into an HTTP header: printable ASCII only)
            return {}, {"key": "That does not look like an API key (letters, digits and punctuation, no spaces, 8 to "
                               "500 characters)."}
        errors = {}
        for secret in optional_secrets().get(provider, {}):
            answers[secret] = text(f"setting:{secret}")
            if answers[secret] and not key:
                errors[f"setting:{secret}"] = "This goes with a key: give the key too (or leave both empty to remove)."
            elif answers[secret] and not _secret_shaped(answers[secret]):
                errors[f"setting:{secret}"] = "Letters, digits and punctuation, no spaces, 8 to 500 characters."
        for setting in names[1:]:
            answers[setting] = text(f"setting:{setting}")
            if key and not answers[setting]:
                errors[f"setting:{setting}"] = f"{provider_label(provider)} needs this with its key."
            elif answers[setting] and not SETTING.fullmatch(answers[setting]):  # (an id that goes into its URLs)
                errors[f"setting:{setting}"] = "Letters, digits, dots, dashes and underscores only."
        return answers, errors or None

    def submitted(self, answers: dict[str, str], user_id: str) -> str:
        """Store (or remove) what the form says, for an admin of the workspace it was sent from; one sentence."""
        workspace = WORKSPACE.get()
        if self.keyring is None or not workspace:
            return ONE_WORKSPACE
        if not self.may_change(user_id):
            return NOT_AN_ADMIN
        provider = answers["provider"]
        names = settable()[provider]
        label = provider_label(provider)
        if not answers[names[0]]:
            if self.keyring.remove_key(workspace, provider):
                log.info("a workspace's own %s key was removed", provider)
                return f"Removed this workspace's own {label} key: its jobs there no longer use it."
            return f"This workspace had no {label} key of its own, so nothing changed."
        try:
            wanted = (*names, *optional_secrets().get(provider, {}))
            last4 = self.keyring.set_key(workspace, provider, {n: answers[n] for n in wanted if n in answers},
                                         user_id=user_id)
        except VaultError as error:
            return str(error)
        log.info("a workspace's own %s key was set", provider)
        ending = f", ending in {last4}" if last4 else ""
        hooks = ""
        if any(answers.get(name) for name in optional_secrets().get(provider, {})):
            hooks = (f" Point {label}'s webhooks (job succeeded, failed, cancelled) at "
                     f"`{webhook_path(provider, workspace)}` on this bot's address: its jobs' outcomes are then "
                     "announced as they happen.")
        return f"Saved this workspace's own {label} key{ending}: what its people do at {label} now uses it.{hooks}"


def _secret_shaped(value: str) -> bool:
    """A key or secret as providers make them: printable ASCII without spaces, of a key's length."""
    return 8 <= len(value) <= KEY_MAX_LENGTH and value.isascii() and value.isprintable() and not any(
        c.isspace() for c in value)
