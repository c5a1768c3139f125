"""Secrets at rest: Slack tokens and provider keys sealed with ENCRYPTION_KEYS (Fernet, from `cryptography`) before
they reach the database. The first key seals; every key opens, so a key is rotated by putting the new one first and
running `finetune-bot rotate-keys`. Without ENCRYPTION_KEYS nothing is sealed and nothing is stored: there is no
plaintext fallback."""

from __future__ import annotations

from collections.abc import Sequence


class VaultError(Exception):
    """A secret cannot be sealed or opened; the message is one line meant for a person."""


NO_KEYS = ("ENCRYPTION_KEYS is not set, so I keep no tokens or keys: set it to one or more Fernet keys, "
           "comma-separated (make one with `python -c \"from cryptography.fernet import Fernet; "
           "print(Fernet.generate_key().decode())\"`).")


class Vault:
    """Seals and opens secrets with the keys given (the first seals, all open)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = tuple(k.strip() for k in keys if k.strip())
        self._fernet = None
        if self._keys:
            self._fernet = _multi(self._keys)

    @property
    def ready(self) -> bool:
        return self._fernet is not None

    def seal(self, secret: str) -> str:
        if self._fernet is None:
            raise VaultError(NO_KEYS)
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        if self._fernet is None:
            raise VaultError(NO_KEYS)
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError):
            raise VaultError("a stored secret cannot be opened with any of ENCRYPTION_KEYS (was a key removed before "
                             "`finetune-bot rotate-keys` ran?)") from None

    def reseal(self, sealed: str) -> str:
        """`sealed` sealed again under the first key (what `rotate-keys` does to every stored secret)."""
        if self._fernet is None:
            raise VaultError(NO_KEYS)
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.rotate(sealed.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError):
            raise VaultError("a stored secret cannot be opened with any of ENCRYPTION_KEYS, so it cannot be "
                             "re-sealed: nothing was changed") from None


def check_keys(value: str | None) -> tuple[str, ...]:
    """ENCRYPTION_KEYS as keys, each checked to be a Fernet key; ValueError names the first that is not (by place,
    never by value)."""
    keys = tuple(k.strip() for k in (value or "").split(",") if k.strip())
    if keys:
        _multi(keys)
    return keys


def _multi(keys: Sequence[str]):  # noqa: ANN202 - cryptography's MultiFernet, imported only when keys are set
    from cryptography.fernet import Fernet, MultiFernet

    fernets = []
    for n, key in enumerate(keys, 1):
        try:
            fernets.append(Fernet(key.encode("ascii")))
        except (ValueError, UnicodeError):
            raise ValueError(f"ENCRYPTION_KEYS' key number {n} is not a Fernet key (32 url-safe base64-encoded "
                             "bytes)") from None
    return MultiFernet(fernets)
