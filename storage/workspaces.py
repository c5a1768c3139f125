"""Workspaces (OAuth mode): Slack's installations of the app and their tokens, the one-time states of installs,
each workspace's provider keys, and which workspace a channel belongs to. Secrets arrive here sealed (bot/vault.py):
this module never sees a token or a key in the clear."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CHANNEL_SEEN_EVERY = 3600.0  # a channel's workspace is written again at most this often (it never changes)


def workspace_key(enterprise_id: str | None, team_id: str | None, *, org_wide: bool = False) -> str:
    """The key an installation is kept under: the enterprise's for an org-wide install, else the workspace's."""
    if org_wide and enterprise_id:
        return f"E:{enterprise_id}"
    return f"T:{team_id or ''}"


class Workspaces:
    """Installations, install states, workspace keys and channels' workspaces."""

    def __init__(self, engine: Any, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock

    # -- installs ------------------------------------------------------------------------------------

    def issue_state(self, state: str, *, ttl: float) -> None:
        with self.engine.transaction() as db:
            db.conn.execute("INSERT INTO oauth_states (state, expires_at) VALUES (?, ?)", (state, self._clock() + ttl))

    def states_waiting(self) -> int:
        """Install states issued and neither used nor expired."""
        return int(self.engine.rows("SELECT count(*) AS n FROM oauth_states WHERE expires_at > ?",
                                    (self._clock(),))[0]["n"])

    def consume_state(self, state: str) -> bool:
        """Whether `state` was issued here and has not expired; it is used up either way (a replay finds nothing)."""
        with self.engine.transaction() as db:
            return db.conn.execute("DELETE FROM oauth_states WHERE state = ? AND expires_at > ?",
                                   (state, self._clock())).rowcount == 1

    def save_installation(self, row: dict) -> None:
        """Keep an installation (a new one, or a reinstall replacing the old tokens)."""
        columns = [c for c in row if c != "key"]
        with self.engine.transaction() as db:
            db.conn.execute(
                f"INSERT INTO installations (key, {', '.join(columns)}) VALUES (?{', ?' * len(columns)})"
                f" ON CONFLICT (key) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns)},"
                " refresh_holder = NULL, refresh_until = NULL",
                (row["key"], *(row[c] for c in columns)))

    def adopt(self, key: str, team_id: str) -> int:
        """A workspace that installs the app takes what was recorded for it before (the same bot on one token, now
        in OAuth mode): the jobs its channels follow become its own, and those channels its. How many jobs."""
        now = self._clock()
        with self.engine.transaction() as db:
            adopted = db.conn.execute(
                "INSERT INTO job_owners (provider, job_id, workspace, claimed_at) SELECT DISTINCT provider, job_id,"
                " ?, ? FROM subscriptions WHERE team_id = ? ON CONFLICT DO NOTHING", (key, now, team_id)).rowcount
            db.conn.execute(
                "INSERT INTO channel_workspaces (channel_id, workspace, seen_at) SELECT DISTINCT channel_id, ?, ?"
                " FROM subscriptions WHERE team_id = ? ON CONFLICT DO NOTHING", (key, now, team_id))
        return max(adopted, 0)

    def installation(self, key: str) -> dict | None:
        rows = self.engine.rows("SELECT * FROM installations WHERE key = ?", (key,))
        return rows[0] if rows else None

    def installations(self) -> list[dict]:
        return self.engine.rows("SELECT * FROM installations ORDER BY key")

    def claim_refresh(self, key: str, worker: str, *, token: str, hold: float) -> bool:
        """Take the refresh of installation `key` whose sealed token is still `token`: True for one process only,
        until it stores the new token or its claim runs out (it died mid-refresh)."""
        now = self._clock()
        with self.engine.transaction() as db:
            return db.conn.execute(
                "UPDATE installations SET refresh_holder = ?, refresh_until = ? WHERE key = ? AND bot_token = ?"
                " AND (refresh_until IS NULL OR refresh_until <= ?)", (worker, now + hold, key, token, now)
            ).rowcount == 1

    def refreshed(self, key: str, worker: str, *, token: str, refresh_token: str, expires_at: float) -> bool:
        """Store the tokens a refresh gave, if `worker` still holds the claim."""
        with self.engine.transaction() as db:
            return db.conn.execute(
                "UPDATE installations SET bot_token = ?, bot_refresh_token = ?, bot_token_expires_at = ?,"
                " refresh_holder = NULL, refresh_until = NULL WHERE key = ? AND refresh_holder = ?",
                (token, refresh_token, expires_at, key, worker)).rowcount == 1

    def release_refresh(self, key: str, worker: str) -> None:
        with self.engine.transaction() as db:
            db.conn.execute("UPDATE installations SET refresh_holder = NULL, refresh_until = NULL"
                            " WHERE key = ? AND refresh_holder = ?", (key, worker))

    def remove(self, key: str) -> dict[str, int]:
        """Forget a workspace's installation and its provider keys (it uninstalled the app, or revoked its token)."""
        with self.engine.transaction() as db:
            return {"installations": db.conn.execute("DELETE FROM installations WHERE key = ?", (key,)).rowcount,
                    "workspace_keys": db.conn.execute("DELETE FROM workspace_keys WHERE workspace = ?",
                                                      (key,)).rowcount}

    # -- provider keys --------------------------------------------------------------------------------

    def set_key(self, workspace: str, provider: str, *, sealed: str, last4: str, user_id: str) -> None:
        with self.engine.transaction() as db:
            db.conn.execute(
                "INSERT INTO workspace_keys (workspace, provider, sealed, last4, set_by, set_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workspace, provider) DO UPDATE SET sealed = excluded.sealed,"
                " last4 = excluded.last4, set_by = excluded.set_by, set_at = excluded.set_at",
                (workspace, provider, sealed, last4, user_id, self._clock()))

    def remove_key(self, workspace: str, provider: str) -> bool:
        with self.engine.transaction() as db:
            return db.conn.execute("DELETE FROM workspace_keys WHERE workspace = ? AND provider = ?",
                                   (workspace, provider)).rowcount == 1

    def keys(self, workspace: str) -> list[dict]:
        """A workspace's keys as they may be shown: provider, last four characters, who set it and when."""
        return self.engine.rows("SELECT provider, last4, set_by, set_at FROM workspace_keys WHERE workspace = ?"
                                " ORDER BY provider", (workspace,))

    def keyed(self) -> list[str]:
        """The workspaces that set a provider key of their own."""
        return [r["workspace"] for r in self.engine.rows("SELECT DISTINCT workspace FROM workspace_keys")]

    def sealed_keys(self, workspace: str) -> dict[str, str]:
        """A workspace's keys, sealed, by provider (one read: what its providers are built from)."""
        return {r["provider"]: r["sealed"] for r in self.engine.rows(
            "SELECT provider, sealed FROM workspace_keys WHERE workspace = ?", (workspace,))}

    def sealed_key(self, workspace: str, provider: str) -> str | None:
        rows = self.engine.rows("SELECT sealed FROM workspace_keys WHERE workspace = ? AND provider = ?",
                                (workspace, provider))
        return rows[0]["sealed"] if rows else None

    def reseal_all(self, reseal: Callable[[str], str]) -> int:
        """Every stored secret (provider keys, installations' tokens) sealed again by `reseal`, in one transaction:
        after a rotation of ENCRYPTION_KEYS, everything is under the first key. Returns how many were resealed."""
        count = 0
        with self.engine.transaction() as db:
            for row in db.conn.execute("SELECT workspace, provider, sealed FROM workspace_keys").fetchall():
                db.conn.execute("UPDATE workspace_keys SET sealed = ? WHERE workspace = ? AND provider = ?",
                                (reseal(row["sealed"]), row["workspace"], row["provider"]))
                count += 1
            for row in db.conn.execute("SELECT key, bot_token, bot_refresh_token FROM installations").fetchall():
                refresh = row["bot_refresh_token"]
                db.conn.execute("UPDATE installations SET bot_token = ?, bot_refresh_token = ? WHERE key = ?",
                                (reseal(row["bot_token"]), reseal(refresh) if refresh else None, row["key"]))
                count += 1 + bool(refresh)
        return count

    # -- jobs ---------------------------------------------------------------------------------------------

    def claim_job(self, provider: str, job_id: str, workspace: str) -> str:
        """The workspace `job_id` belongs to: `workspace`, when it is the first to start or name it."""
        with self.engine.transaction() as db:
            db.conn.execute("INSERT INTO job_owners (provider, job_id, workspace, claimed_at) VALUES (?, ?, ?, ?)"
                            " ON CONFLICT DO NOTHING", (provider, job_id, workspace, self._clock()))
            return db.conn.execute("SELECT workspace FROM job_owners WHERE provider = ? AND job_id = ?",
                                   (provider, job_id)).fetchone()[0]

    def owned(self, workspace: str, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of (provider, job id) pairs, those that belong to `workspace`."""
        return {pair for pair, owner in self.owners(pairs).items() if owner == workspace}

    def owners(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Of (provider, job id) pairs, the workspace each belongs to (pairs no workspace claimed are left out)."""
        found: dict[tuple[str, str], str] = {}
        for provider in {p for p, _ in pairs}:
            ids = [j for p, j in pairs if p == provider]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                rows = self.engine.rows(
                    f"SELECT job_id, workspace FROM job_owners WHERE provider = ? AND job_id IN"
                    f" ({', '.join('?' * len(chunk))})", (provider, *chunk))
                found.update({(provider, r["job_id"]): r["workspace"] for r in rows})
        return found

    # -- channels ---------------------------------------------------------------------------------------

    def note_channel(self, channel_id: str, workspace: str) -> None:
        """Remember that `channel_id` is `workspace`'s (written again only when it changed, or an hour on)."""
        now = self._clock()
        with self.engine.transaction() as db:
            db.conn.execute(
                "INSERT INTO channel_workspaces (channel_id, workspace, seen_at) VALUES (?, ?, ?)"
                " ON CONFLICT (channel_id) DO UPDATE SET workspace = excluded.workspace, seen_at = excluded.seen_at"
                " WHERE channel_workspaces.workspace != excluded.workspace OR channel_workspaces.seen_at < ?",
                (channel_id, workspace, now, now - CHANNEL_SEEN_EVERY))

    def workspace_of(self, channel_id: str) -> str | None:
        rows = self.engine.rows("SELECT workspace FROM channel_workspaces WHERE channel_id = ?", (channel_id,))
        return rows[0]["workspace"] if rows else None

    @staticmethod
    def prune(conn: Any, now: float) -> dict[str, int]:
        """Forget install states that expired unused."""
        return {"oauth_states": conn.execute("DELETE FROM oauth_states WHERE expires_at <= ?", (now,)).rowcount}
