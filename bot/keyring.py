"""Each workspace's providers, in OAuth mode: built from the keys its admins set with `/finetune keys` (sealed in the
database with ENCRYPTION_KEYS), and from the environment's keys only for the workspaces the operator shares them
with (SHARED_KEYS_TEAM_IDS). No workspace spends another's money: whatever the bot does for a workspace (a command,
a form, a poll of its jobs, a chart) goes through that workspace's providers, chosen by the WORKSPACE of the work.

A bot of one workspace (SLACK_BOT_TOKEN) has none of this: its providers are the environment's, as they always were.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace

from bot.installs import WORKSPACE
from bot.providers import registry
from bot.providers.types import FineTuningProvider, Providers, UnknownProvider, provider_label
from bot.scrub import learn
from bot.vault import Vault, VaultError
from storage import Store

log = logging.getLogger(__name__)

CACHED_WORKSPACES = 1000  # workspaces whose providers (an SDK client each) are kept built; the rest built again
RETIRE_AFTER_TIMEOUTS = 8  # a replaced provider is closed after this many provider timeouts (its retries' worth)
FRESH_FOR = 1.0  # seconds a workspace's keys, once read, are taken as they were
ADD_A_KEY = "a workspace admin can add one with `/finetune keys`"


class NoProviderKey(UnknownProvider):
    """The workspace has no key for the provider named (or for any): said with how to add one."""

    def __init__(self, name: str, hint: str) -> None:
        super().__init__(name)
        self.hint = hint


@contextmanager
def acting_for(workspace: str | None) -> Iterator[None]:
    """Work done for `workspace` (the scheduler's, which no request set): its providers, its token."""
    token = WORKSPACE.set(workspace or None)
    try:
        yield
    finally:
        WORKSPACE.reset(token)


def for_job(store: Store, provider: str, job_id: str):  # noqa: ANN201 - a context manager
    """Work on one job for the workspace it belongs to (its owner: whoever started it, or first named it): the
    scheduler's, for a job it did not come to through a request. None for a bot of one workspace."""
    return acting_for(store.workspaces.owner(provider, job_id))


def settable() -> dict[str, tuple[str, ...]]:
    """The providers a workspace may set its own key for, each with the settings it sets (the key first)."""
    return {name: names for shape in registry.SHAPES for name, names in shape.own_keys.items()}


def optional_secrets() -> dict[str, dict[str, str]]:
    """The secrets a workspace may set with a provider's key but need not (setting -> its label), by provider."""
    return {name: dict(labels) for shape in registry.SHAPES for name, labels in shape.own_secrets.items()}


class Keyring:
    """Builds, and keeps, each workspace's providers; seals and opens what `/finetune keys` stores."""

    def __init__(self, settings, store: Store, vault: Vault, *, shared: Providers | None,  # noqa: ANN001
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings  # bot.config.Settings
        self.store = store
        self.vault = vault
        self.shared = shared  # the environment's providers (None: the environment configures none)
        self.clock = clock
        # Every workspace's providers start from the operator's settings without any provider's own keys: base URLs,
        # default models and timeouts stay theirs; only the keys are the workspace's.
        # (The operator's webhook secret is not a workspace's either: its own webhooks verify with its own.)
        own = {name for names in settable().values() for name in names}
        own |= {name for labels in optional_secrets().values() for name in labels}
        self._base_env = {k: v for k, v in settings.env.items() if k not in own}
        self._cache: OrderedDict[str, tuple[tuple, Providers | None, float]] = OrderedDict()
        self._lock = threading.Lock()
        # Providers replaced (a key changed, a workspace left the cache), closed once every request they may be
        # making is over: their connections go then, not whenever the garbage collector comes by.
        self._retired: list[tuple[float, list[FineTuningProvider]]] = []
        self._grace = RETIRE_AFTER_TIMEOUTS * settings.provider_timeout_seconds

    # -- whose providers ----------------------------------------------------------------------------------

    def shares_with(self, workspace: str | None) -> bool:
        """Whether the environment's keys serve `workspace` (the operator's choice; every one in the sandbox)."""
        if workspace is None or self.settings.sandbox:
            return True  # (work for no workspace: the operator's own, from before OAuth was turned on)
        shared = self.settings.shared_keys_team_ids
        return "*" in shared or any(part in shared for part in workspace.split(":") if part)

    def providers_for(self, workspace: str | None) -> Providers | None:
        """The providers `workspace` uses: its own keys first, then the shared ones it may use; None when none.
        Its keys are read again at most once every FRESH_FOR seconds (a service asks several times a command); a
        change made here is seen at once (`forget`), one made on another replica within that second."""
        key = workspace or ""
        now = time.monotonic()
        if self._retired:
            self._close_retired(now)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and now - cached[2] < FRESH_FOR:
                self._cache.move_to_end(key)
                return cached[1]
        # An uninstalled workspace has no providers at all (not even shared ones): nothing more is polled for it.
        installed = workspace is None or self.store.workspaces.installation(workspace) is not None
        sealed = self.store.workspaces.sealed_keys(workspace) if workspace and installed else {}
        fingerprint = (tuple(sorted(sealed.items())), installed and self.shares_with(workspace))
        if cached is not None and cached[0] == fingerprint:
            providers = cached[1]  # (unchanged: not built again)
        else:
            providers = self._build(workspace, sealed, shared=fingerprint[1])
        with self._lock:
            replaced = self._cache.get(key)
            self._cache[key] = (fingerprint, providers, now)
            self._cache.move_to_end(key)
            if replaced is not None and replaced[1] is not providers:
                self._retire(replaced[1], now)
            while len(self._cache) > CACHED_WORKSPACES:
                self._retire(self._cache.popitem(last=False)[1][1], now)
        return providers

    def _retire(self, providers: Providers | None, now: float) -> None:
        """(Under the lock.) A workspace's own providers, no longer handed out, to be closed after the grace."""
        shared = {id(p) for p in self.shared or []}
        own = [p for p in providers or [] if id(p) not in shared]
        if own:
            self._retired.append((now, own))

    def _close_retired(self, now: float) -> None:
        with self._lock:
            due = [providers for at, providers in self._retired if now - at >= self._grace]
            self._retired = [(at, providers) for at, providers in self._retired if now - at < self._grace]
        for provider in (p for providers in due for p in providers):
            try:
                provider.close()
            except Exception:  # noqa: BLE001 - closing is tidying: a failure leaves it to the garbage collector
                log.debug("could not close a replaced %s provider", provider.name, exc_info=True)

    def _build(self, workspace: str | None, sealed: Mapping[str, str], *, shared: bool) -> Providers | None:
        own: list[FineTuningProvider] = []
        if sealed:
            env = dict(self._base_env)
            for provider, box in sealed.items():
                try:
                    values = json.loads(self.vault.open(box))
                except (VaultError, ValueError):
                    log.warning("a stored %s key of a workspace cannot be opened; that provider is left out until "
                                "its key is set again", provider)
                    continue
                for secret in (settable().get(provider, ("",))[0], *optional_secrets().get(provider, {})):
                    learn(values.get(secret))  # (a restart learns them again here)
                env.update(values)
            try:
                built = registry.configured(replace(self.settings, env=env), clock=self.clock)
            except ValueError:  # none configured after all
                built = []
            own = [p for p in built if p.name in sealed]
        names = {p.name for p in own}
        found = own + [p for p in (self.shared or []) if shared and p.name not in names]
        if not found:
            return None
        default = self.settings.default_provider
        return Providers(found, default=default if default in {p.name for p in found} else None)

    def forget(self, workspace: str) -> None:
        """Its providers are built again at the next use (its keys changed, or it uninstalled)."""
        with self._lock:
            gone = self._cache.pop(workspace, None)
            if gone is not None:
                self._retire(gone[1], time.monotonic())

    # -- what `/finetune keys` stores ---------------------------------------------------------------------

    def set_key(self, workspace: str, provider: str, values: Mapping[str, str], *, user_id: str) -> str:
        """Seal and store a workspace's settings for `provider` (its key first); the key's last four characters.
        VaultError (said to the person) when ENCRYPTION_KEYS is not set: nothing is stored in plain text."""
        names = settable()[provider]
        key = values[names[0]]
        extra = {name: values[name] for name in optional_secrets().get(provider, {}) if values.get(name)}
        for secret in (key, *extra.values()):
            learn(secret)
        sealed = self.vault.seal(json.dumps({**{name: values[name] for name in names}, **extra}))
        last4 = key[-4:] if len(key) >= 12 else ""
        self.store.workspaces.set_key(workspace, provider, sealed=sealed, last4=last4, user_id=user_id)
        self.forget(workspace)
        return last4

    def remove_key(self, workspace: str, provider: str) -> bool:
        removed = self.store.workspaces.remove_key(workspace, provider)
        self.forget(workspace)
        return removed


class WorkspaceProviders(Providers):
    """The providers of the workspace the current work is for (WORKSPACE), wherever the bot's services ask: the one
    object every service holds in OAuth mode. Work for no workspace (the operator's own rows) gets the environment's
    providers."""

    def __init__(self, keyring: Keyring) -> None:  # (no super().__init__: nothing of its own to hold)
        self.keyring = keyring

    def _current(self) -> Providers | None:
        return self.keyring.providers_for(WORKSPACE.get())

    def _hint(self, name: str | None) -> str:
        """How to get a provider this workspace lacks: its own key (an admin adds it), or the operator's setting."""
        label = provider_label(name) if name in settable() else "that provider"
        if WORKSPACE.get() and not self.keyring.shares_with(WORKSPACE.get()):
            return f"This workspace has no key for {label} yet: {ADD_A_KEY}."
        return "Whoever runs finetune-bot can configure it."

    def __iter__(self) -> Iterator[FineTuningProvider]:
        """The workspace's providers. A workspace with none is told so (NoProviderKey) rather than shown an empty
        answer (`list` saying "no jobs yet"); work for no workspace (the scheduler's) just finds none."""
        current = self._current()
        if current is None and WORKSPACE.get():
            raise NoProviderKey("", f"This workspace has no provider key yet: {ADD_A_KEY}.")
        return iter(current) if current is not None else iter(())

    def __len__(self) -> int:
        current = self._current()
        return len(current) if current is not None else 0

    def __contains__(self, name: object) -> bool:
        current = self._current()
        return current is not None and name in current

    @property
    def names(self) -> list[str]:
        current = self._current()
        return current.names if current is not None else []

    @property
    def default(self) -> FineTuningProvider:  # type: ignore[override]
        current = self._current()
        if current is None:
            raise NoProviderKey("", f"This workspace has no provider key yet: {ADD_A_KEY}.")
        return current.default

    def get(self, name: str | None) -> FineTuningProvider:
        current = self._current()
        if current is None:
            raise NoProviderKey(name or "", f"This workspace has no provider key yet: {ADD_A_KEY}.")
        try:
            return current.get(name)
        except UnknownProvider:
            raise NoProviderKey(name or "", self._hint(name)) from None

    def fitting(self, job_id: str) -> list[FineTuningProvider]:
        current = self._current()
        return current.fitting(job_id) if current is not None else []

    def everywhere(self) -> list[FineTuningProvider]:
        """The environment's providers and every workspace's own, one a name: a provider's dates (`retiring`'s
        notices) concern every channel that follows its fine-tunes, whoever's key made them."""
        found: dict[str, FineTuningProvider] = {p.name: p for p in self.keyring.shared or []}
        for workspace in self.keyring.store.workspaces.keyed():
            for provider in self.keyring.providers_for(workspace) or []:
                found.setdefault(provider.name, provider)
        return list(found.values())
