"""A channel's settings: what it hears, its thresholds and budget, who may raise them. One concern of the store,
over its engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from storage.queries import Queries
from storage.scope import current_workspace

SQL = Queries("channels")  # storage/sql/channels.sql

# What a channel hears until someone changes it: every outcome, mentions, a card per job with progress in its thread
# at most every five minutes.
CHANNEL_DEFAULTS = {"outcomes": "all", "mentions": 1, "cards": 1, "progress": 1, "progress_minutes": 5,
                    "confirm_above": None, "budget": None, "watchdog": "warn"}
OFF = "off"  # a setting whose off is no value at all (a threshold, a budget): stored as NULL


class NotLowered(ValueError):
    """A limit that may only be lowered here, asked to go up or off: which, and what it is now."""

    def __init__(self, name: str, current: float) -> None:
        super().__init__(name)
        self.name, self.current = name, current


class ChannelSettings:
    """Each channel's settings, the defaults where it set none."""

    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock

    def channel_settings(self, channel_id: str) -> dict:
        """What a channel hears (defaults for a channel that never changed anything), as the current workspace set
        it (storage/scope.py)."""
        rows = self.engine.rows(SQL["settings"], {"channel_id": channel_id, "workspace": current_workspace()})
        return rows[0] if rows else {"channel_id": channel_id, **CHANNEL_DEFAULTS, "updated_by": None,
                                     "updated_at": None}

    def set_channel_settings(self, channel_id: str, user_id: str, *, only_lower: Iterable[str] = (),
                             **changes: str | int | bool | None) -> dict:
        """Change some of a channel's settings (the names of CHANNEL_DEFAULTS); the others stay as they were. A limit
        named in `only_lower` may only be lowered (or set where it was off): raising it or switching it off raises
        NotLowered, and nothing changes. Judged in the same transaction as the write."""
        unknown = set(changes) - set(CHANNEL_DEFAULTS)
        if unknown:
            raise ValueError(f"no such channel setting: {sorted(unknown)}")
        with self.engine.transaction() as db:
            workspace = current_workspace()
            current = db.conn.execute(SQL["settings"], {"channel_id": channel_id, "workspace": workspace}).fetchone()
            row = dict(current) if current else {"channel_id": channel_id, **CHANNEL_DEFAULTS}
            row["workspace"] = workspace  # (what the channel had before OAuth, changed: now this workspace's own)
            for name in only_lower:
                value, now = changes.get(name), row.get(name)
                if value is not None and now is not None and (value == OFF or value > now):
                    raise NotLowered(name, now)
            for name, value in changes.items():
                if value == OFF and CHANNEL_DEFAULTS[name] is None:
                    row[name] = None
                elif value is not None:
                    row[name] = int(value) if isinstance(value, bool) else value
            row.update(updated_by=user_id, updated_at=self._clock())
            db.conn.execute(SQL["save_settings"], row)
        return row



def setting(conn: Any, channel_id: str, name: str):
    """One of a channel's settings (CHANNEL_DEFAULTS names them), in the caller's transaction."""
    row = conn.execute(SQL["settings"], {"channel_id": channel_id, "workspace": current_workspace()}).fetchone()
    return row[name] if row else CHANNEL_DEFAULTS[name]
