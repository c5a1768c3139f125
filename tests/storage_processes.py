"""What the processes started by `tests/test_storage.py` run, in a module of their own so that each spawned process
imports only the storage layer. Spawned from the test module, each imported it and with it `tests/conftest.py` (the
whole bot, its SDKs and the stand-ins): about 1 s of CPU for each of the 24 processes those tests start."""

from __future__ import annotations

from storage import Store


def claim_due(store, worker: str, *, limit: int, lease_seconds: float) -> list[dict]:  # noqa: ANN001
    """Claim up to `limit` due posts at once, as a test's sender would (the bot's sender claims one at a time)."""
    claimed = (store.outbox.claim(row["key"], worker, lease_seconds=lease_seconds)
               for row in store.outbox.due_announcements(limit=limit))
    return [row for row in claimed if row is not None]


def open_store(location: str, out) -> None:  # noqa: ANN001 - a multiprocessing queue
    """Open a store (creating or migrating its tables) and say whether it came up."""
    try:
        Store(location).close()
        out.put("ok")
    except Exception as error:  # pragma: no cover - reported to the test at once rather than after its timeout
        out.put(repr(error))


def hammer(location: str, worker: str, jobs: int, out) -> None:  # noqa: ANN001
    """Record `jobs` outcomes one by one, claiming and marking sent whatever falls due meanwhile, then the rest; says
    which posts this process sent."""
    store = Store(location)
    sent = []
    for i in range(jobs):
        job = {"provider": "openai", "id": f"ftjob-{i}", "status": "succeeded", "model": "m", "created_at": 100}
        store.follows.record_jobs([(job, "succeeded")])
        for row in claim_due(store, worker, limit=5, lease_seconds=300):
            if store.outbox.mark_sent(row["key"], worker, worker):
                sent.append(row["key"])
    for row in claim_due(store, worker, limit=1000, lease_seconds=300):
        if store.outbox.mark_sent(row["key"], worker, worker):
            sent.append(row["key"])
    out.put(sent)
