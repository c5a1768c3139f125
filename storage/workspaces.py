"""Workspaces (OAuth mode): Slack's installations of the app and their tokens, the one-time states of installs,
each workspace's provider keys, and which workspace a channel belongs to. Secrets arrive here sealed (bot/vault.py):
this module never sees a token or a key in the clear."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from storage.queries import Queries, in_lists

SQL = Queries("workspaces")  # storage/sql/workspaces.sql
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
            db.conn.execute(SQL["issue_state"], {"state": state, "expires_at": self._clock() + ttl})

    def states_waiting(self) -> int:
        """Install states issued and neither used nor expired."""
        return int(self.engine.rows(SQL["states_waiting"], {"now": self._clock()})[0]["n"])

    def consume_state(self, state: str) -> bool:
        """Whether `state` was issued here and has not expired; it is used up either way (a replay finds nothing)."""
        with self.engine.transaction() as db:
            return db.conn.execute(SQL["consume_state"], {"state": state, "now": self._clock()}).rowcount == 1

    def save_installation(self, row: dict) -> None:
        """Keep an installation (a new one, or a reinstall replacing the old tokens): `row` has every column of
        the query's."""
        with self.engine.transaction() as db:
            db.conn.execute(SQL["save_installation"], row)

    def adopt(self, key: str, team_ids: Iterable[str]) -> int:
        """An installation takes what was recorded for its workspaces before (the same bot on one token, now in
        OAuth mode): the jobs their channels follow become its own, and those channels its. `team_ids`: the one
        workspace installed, or each of an org-wide install's. How many jobs."""
        asked, team_ids, adopted = {"key": key, "now": self._clock()}, list(team_ids), 0
        with self.engine.transaction() as db:
            for sql, listed in in_lists(SQL["adopt_jobs"], "team_ids", team_ids):
                adopted += max(db.conn.execute(sql, {**asked, **listed}).rowcount, 0)
            for sql, listed in in_lists(SQL["adopt_channels"], "team_ids", team_ids):
                db.conn.execute(sql, {**asked, **listed})
        return adopted

    def installation(self, key: str) -> dict | None:
        rows = self.engine.rows(SQL["installation"], {"key": key})
        return rows[0] if rows else None

    def installations(self) -> list[dict]:
        return self.engine.rows(SQL["installations"])

    def claim_refresh(self, key: str, worker: str, *, token: str, hold: float) -> bool:
        """Take the refresh of installation `key` whose sealed token is still `token`: True for one process only,
        until it stores the new token or its claim runs out (it died mid-refresh)."""
        now = self._clock()
        with self.engine.transaction() as db:
            return db.conn.execute(SQL["claim_refresh"], {"worker": worker, "until": now + hold, "key": key,
                                                          "token": token, "now": now}).rowcount == 1

    def refreshed(self, key: str, worker: str, *, token: str, refresh_token: str, expires_at: float) -> bool:
        """Store the tokens a refresh gave, if `worker` still holds the claim."""
        with self.engine.transaction() as db:
            return db.conn.execute(SQL["refreshed"], {"token": token, "refresh_token": refresh_token,
                                                      "expires_at": expires_at, "key": key, "worker": worker}
                                   ).rowcount == 1

    def release_refresh(self, key: str, worker: str) -> None:
        with self.engine.transaction() as db:
            db.conn.execute(SQL["release_refresh"], {"key": key, "worker": worker})

    def remove(self, key: str) -> dict[str, int]:
        """Forget a workspace's installation and its provider keys (it uninstalled the app, or revoked its token)."""
        with self.engine.transaction() as db:
            return {"installations": db.conn.execute(SQL["remove_installation"], {"key": key}).rowcount,
                    "workspace_keys": db.conn.execute(SQL["remove_keys"], {"key": key}).rowcount}

    # -- provider keys --------------------------------------------------------------------------------

    def set_key(self, workspace: str, provider: str, *, sealed: str, last4: str, user_id: str) -> None:
        with self.engine.transaction() as db:
            db.conn.execute(SQL["set_key"], {"workspace": workspace, "provider": provider, "sealed": sealed,
                                             "last4": last4, "user_id": user_id, "now": self._clock()})

    def remove_key(self, workspace: str, provider: str) -> bool:
        with self.engine.transaction() as db:
            return db.conn.execute(SQL["remove_key"], {"workspace": workspace, "provider": provider}).rowcount == 1

    def keys(self, workspace: str) -> list[dict]:
        """A workspace's keys as they may be shown: provider, last four characters, who set it and when."""
        return self.engine.rows(SQL["keys"], {"workspace": workspace})

    def keyed(self) -> list[str]:
        """The workspaces that set a provider key of their own."""
        return [r["workspace"] for r in self.engine.rows(SQL["keyed"])]

    def sealed_keys(self, workspace: str) -> dict[str, str]:
        """A workspace's keys, sealed, by provider (one read: what its providers are built from)."""
        return {r["provider"]: r["sealed"] for r in self.engine.rows(SQL["sealed_keys"], {"workspace": workspace})}

    def sealed_key(self, workspace: str, provider: str) -> str | None:
        rows = self.engine.rows(SQL["sealed_key"], {"workspace": workspace, "provider": provider})
        return rows[0]["sealed"] if rows else None

    def reseal_all(self, reseal: Callable[[str], str]) -> int:
        """Every stored secret (provider keys, installations' tokens) sealed again by `reseal`, in one transaction:
        after a rotation of ENCRYPTION_KEYS, everything is under the first key. Returns how many were resealed."""
        count = 0
        with self.engine.transaction() as db:
            for row in db.conn.execute(SQL["all_sealed_keys"]).fetchall():
                db.conn.execute(SQL["reseal_key"], {"sealed": reseal(row["sealed"]), "workspace": row["workspace"],
                                                    "provider": row["provider"]})
                count += 1
            for row in db.conn.execute(SQL["all_tokens"]).fetchall():
                refresh = row["bot_refresh_token"]
                db.conn.execute(SQL["reseal_tokens"], {"token": reseal(row["bot_token"]), "key": row["key"],
                                                       "refresh_token": reseal(refresh) if refresh else None})
                count += 1 + bool(refresh)
        return count

    # -- jobs ---------------------------------------------------------------------------------------------

    def claim_job(self, provider: str, job_id: str, workspace: str) -> str:
        """The workspace `job_id` belongs to: `workspace`, when it is the first to start or name it."""
        with self.engine.transaction() as db:
            asked = {"provider": provider, "job_id": job_id, "workspace": workspace, "now": self._clock()}
            db.conn.execute(SQL["claim_job"], asked)
            return db.conn.execute(SQL["job_owner"], asked).fetchone()[0]

    def owner(self, provider: str, job_id: str) -> str | None:
        """The workspace one job belongs to; None when no workspace claimed it."""
        rows = self.engine.rows(SQL["job_owner"], {"provider": provider, "job_id": job_id})
        return rows[0]["workspace"] if rows else None

    def owners(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Of (provider, job id) pairs, the workspace each belongs to (pairs no workspace claimed are left out)."""
        found: dict[tuple[str, str], str] = {}
        for provider in {p for p, _ in pairs}:
            for sql, ids in in_lists(SQL["owners"], "job_ids", [j for p, j in pairs if p == provider]):
                rows = self.engine.rows(sql, {"provider": provider, **ids})
                found.update({(provider, r["job_id"]): r["workspace"] for r in rows})
        return found

    # -- channels ---------------------------------------------------------------------------------------

    def note_channel(self, channel_id: str, workspace: str) -> None:
        """Remember that `channel_id` is `workspace`'s (written again only when it changed, or an hour on)."""
        now = self._clock()
        with self.engine.transaction() as db:
            db.conn.execute(SQL["note_channel"], {"channel_id": channel_id, "workspace": workspace, "now": now,
                                                  "stale_before": now - CHANNEL_SEEN_EVERY})

    def workspace_of(self, channel_id: str) -> str | None:
        rows = self.engine.rows(SQL["workspace_of"], {"channel_id": channel_id})
        return rows[0]["workspace"] if rows else None

    @staticmethod
    def prune(conn: Any, now: float) -> dict[str, int]:
        """Forget install states that expired unused."""
        return {"oauth_states": conn.execute(SQL["prune"], {"now": now}).rowcount}
