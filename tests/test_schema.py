"""The tables declared once (storage/schema.py) are the tables the SQLite migrations build, and the same declaration
makes them on a real PostgreSQL server: one schema for both engines, kept in step by these tests."""

from __future__ import annotations

import sqlite3

import pytest

from storage import Store
from tests.conftest import claim_due, start_intents

sqlalchemy = pytest.importorskip("sqlalchemy")


def _migrated_sqlite(tmp_path) -> dict[str, dict]:
    """Each table of a database the migrations made: its columns in order, its key, the columns that may not be
    null, and the column lists of its indexes."""
    path = tmp_path / "bot.db"
    Store(str(path)).close()
    conn = sqlite3.connect(path)
    try:
        tables = {}
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                            " AND name NOT LIKE 'sqlite_%' AND name != '_sqlite_migrations'")]
        for name in names:
            info = conn.execute(f"PRAGMA table_info('{name}')").fetchall()
            indexes = set()
            for index in conn.execute(f"PRAGMA index_list('{name}')").fetchall():
                if index[3] == "c":  # made by CREATE INDEX (not a primary key's own)
                    indexes.add(tuple(r[2] for r in conn.execute(f"PRAGMA index_info('{index[1]}')")))
            tables[name] = {
                "columns": [r[1] for r in info],
                "key": [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])],
                "not_null": {r[1] for r in info if r[3]},
                "indexes": indexes,
            }
        return tables
    finally:
        conn.close()


def _declared(*, sqlite: bool = False) -> dict[str, dict]:
    """The declared tables; for the comparison with SQLite's, without the columns SQLite has built in (rowid)."""
    from storage.schema import metadata

    def columns(table):
        return [c for c in table.columns if not (sqlite and c.info.get("sqlite") == "rowid")]

    return {
        table.name: {
            "columns": [c.name for c in columns(table)],
            "key": [c.name for c in table.primary_key.columns],
            "not_null": {c.name for c in columns(table) if not c.nullable and not c.primary_key},
            "indexes": {tuple(c.name for c in index.columns) for index in table.indexes},
        }
        for table in metadata.sorted_tables
    }


def test_the_declared_tables_are_the_tables_the_sqlite_migrations_build(tmp_path):
    migrated, declared = _migrated_sqlite(tmp_path), _declared(sqlite=True)
    assert sorted(declared) == sorted(migrated)
    for name, table in migrated.items():
        # (SQLite marks a key column not-null only where the migration said so: compare the others.)
        table = {**table, "not_null": table["not_null"] - set(table["key"])}
        assert declared[name] == table, name


def test_the_declared_tables_are_made_on_a_real_postgresql_server(postgres_url):
    from sqlalchemy import create_engine, inspect

    from storage.schema import metadata

    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        metadata.create_all(engine)
        found = inspect(engine)
        declared = _declared()
        assert sorted(found.get_table_names()) == sorted(declared)
        for name, table in declared.items():
            columns = found.get_columns(name)
            assert [c["name"] for c in columns] == table["columns"], name
            assert found.get_pk_constraint(name)["constrained_columns"] == table["key"], name
            assert {c["name"] for c in columns if not c["nullable"]} - set(table["key"]) == table["not_null"], name
            assert {tuple(i["column_names"]) for i in found.get_indexes(name)} == table["indexes"], name
        types = {c["name"]: c["type"] for c in found.get_columns("jobs")}
        assert isinstance(types["trained_tokens"], sqlalchemy.BigInteger)  # token counts outgrow 32 bits
        assert isinstance(types["observed_at"], sqlalchemy.Float) and types["observed_at"].precision == 53
    finally:
        engine.dispose()


def test_every_statement_the_store_runs_is_valid_postgresql(tmp_path, postgres_url):
    """The store's queries are one dialect for both engines: each statement a day's work runs on SQLite (traced with
    its values) is planned by a real PostgreSQL server over the declared tables (EXPLAIN: parsed, names and types
    checked, nothing run). What stays SQLite's own is the connection's (BEGIN IMMEDIATE, PRAGMA) and the adoption of
    rows from before providers were named, which only an old SQLite file can hold."""
    import psycopg
    from sqlalchemy import create_engine

    from storage.schema import metadata

    store = Store(str(tmp_path / "bot.db"), clock=lambda: 1_000_000.0)
    seen: list[str] = []
    store.engine.db().conn.set_trace_callback(seen.append)
    follows, outbox, cards, channels, forms, replays = (store.follows, store.outbox, store.cards, store.channels,
                                                        store.forms, store.replays)
    job = {"id": "ftjob-1", "status": "running", "model": "m", "created_at": 1, "provider": "openai"}
    follows.follow("C1", job, final=False, team_id="T", user_id="U1", origin="start", card=True)
    follows.follow("D1", {**job, "id": "ftjob-2"}, final=False, team_id="T", user_id="U1", origin="dm")
    channels.set_channel_settings("C1", "U1", outcomes="failures", progress_minutes=10)
    channels.channel_settings("C1"), follows.channel_follows("C1"), follows.channel_follows("C1", final=False, limit=5)
    follows.follow_counts("C1"), follows.followers("ftjob-1", "openai"), follows.job("ftjob-1", "openai")
    follows.dm_follows("U1")
    follows.providers_of("ftjob-1"), follows.active_jobs(), follows.has_active_jobs()
    follows.mark_polled([("openai", "x")])
    [card] = claim_due(store, "w", limit=5, lease_seconds=60)
    cards.set_card("C1", "ftjob-1", "openai", ts="1.0", revision=1)
    outbox.mark_sent(card["key"], "w", "1.0"), cards.card("C1", "ftjob-1", "openai")
    cards.card_edit_in_flight(card, 1.0)
    cards.progress_due("openai", ["ftjob-1"]), cards.queue_progress("openai", "ftjob-1", 3, {"loss": 1.0})
    follows.record_jobs([({**job, "status": "failed"}, "failed"), ({**job, "id": "ftjob-2", "status": "x"}, None)])
    outbox.defer_channel("C1", 2_000_000.0), outbox.defer_channel("C1", 2_000_000.0, kinds=["progress"])
    outbox.outcomes_waiting(), outbox.next_due(), outbox.due_announcements(limit=5), outbox.announcements(state="sent")
    for row in outbox.announcements(state="pending"):
        outbox.claim(row["key"], "w", lease_seconds=60)
        outbox.mark_retry(row["key"], "w", at=1.0, error="e", uncertain=True)
        outbox.claim(row["key"], "w", lease_seconds=60)
        outbox.release(row["key"], "w", at=1.0, note="n")
        outbox.claim(row["key"], "w", lease_seconds=60)
        if row["kind"] == "announcement":
            outbox.mark_failed(row["key"], "w", "gone", tell="U1")
        else:
            outbox.mark_skipped(row["key"], "w", "r")
    follows.job_with_model("ft:m"), follows.unfollow("D1", "ftjob-2", "openai")
    share = forms.keep_answer("U1", "C1", {"text": "hi"})
    forms.claim_share(share, "U1"), forms.unclaim_share(share)
    form = forms.record_form("start", user_id="U1", team_id="T", channel_id="C1")
    forms.form(form, "start"), forms.claim_form(form, "start", "U1")
    replays.first_sight_of_trigger("t1"), replays.remember_webhook("wh1"), store.check_writable()
    replays.record_intent("r1", team_id="T", channel_id="C1", user_id="U1", response_url=None, training_file="f",
                          model="m", suffix=None, provider="openai")
    replays.claim_orphaned_intents(older_than=0, worker="w"), replays.reopen_intent("r1")
    replays.finish_intent("r1", job_id="ftjob-1"), start_intents(store), store.prune()
    store.close()

    statements = {s.strip() for s in seen if s.split(None, 1)[0].upper() in {"SELECT", "INSERT", "UPDATE", "DELETE"}}
    assert len(statements) > 60  # the workload above reaches the store's queries
    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    metadata.create_all(engine)
    engine.dispose()
    refused = []
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for statement in sorted(statements):
            try:
                conn.execute("EXPLAIN " + statement.replace("%", "%%"))
            except psycopg.Error as error:
                refused.append(f"{statement}\n    -> {str(error).splitlines()[0]}")
    # Left, and named here so that it cannot grow unseen: the outbox's tie-break is SQLite's rowid (the order rows
    # were queued in one transaction: a status change's thread reply before the steps after it). PostgreSQL needs a
    # column of its own for it, which comes with the store's move onto the declared tables.
    known = [r for r in refused if 'column "rowid" does not exist' in r and r.startswith("SELECT * FROM announcements")]
    assert len(known) <= 1 and refused == known, "\n".join(refused)


def test_every_step_since_postgresql_came_is_written_once_for_both_engines():
    """PostgreSQL databases were first made with the steps up to m009_leases; every later step is one body of
    portable SQL (storage/migrations.py's SQL_STEPS) that both engines run, or their next start would stop on it."""
    from storage.migrations import SQL_STEPS, STEPS

    later = STEPS[STEPS.index("m009_leases") + 1:]
    assert later and [name for name in later if name not in SQL_STEPS] == []


def _postgresql_schema(url: str) -> dict:
    """Every column of the bot's tables (type, nullability, default) and every index (its definition), as the
    server describes them."""
    import psycopg

    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name != '_finetune_migrations'").fetchall()
        indexes = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'"
                               " AND tablename != '_finetune_migrations'").fetchall()
    # A default is the same whether written 1 or '1' (SQLAlchemy quotes it; PostgreSQL then adds the cast).
    return {"columns": {(t, c, kind, null, (default or "").split("::")[0].strip("'")) for t, c, kind, null, default
                        in columns},
            "indexes": {row[0] for row in indexes}}


# Tables a later step rebuilt with a new key: the columns it added, and the key it had before.
REBUILT = {"channel_settings": (("workspace",), ("channel_id",))}


def _undo(statements: tuple[str, ...]) -> list[str]:
    """What takes a step back, last statement first: its tables dropped (their indexes go with them), its columns
    dropped; a table it rebuilt (copied aside as `<table>_old`, made again, filled back) given its older columns and
    key again."""
    import re

    rebuilt = {m[1] for s in statements if (m := re.match(r"CREATE TABLE (\w+)_old AS SELECT", s))}
    undo = []
    for statement in reversed(statements):
        if (copied := re.match(r"CREATE TABLE (\w+)_old AS SELECT", statement)) is not None:
            added, key = REBUILT[copied[1]]
            undo += [f"ALTER TABLE {copied[1]} DROP CONSTRAINT {copied[1]}_pkey",
                     *(f"ALTER TABLE {copied[1]} DROP COLUMN {column}" for column in added),
                     f"ALTER TABLE {copied[1]} ADD PRIMARY KEY ({', '.join(key)})"]
        elif (made := re.match(r"CREATE TABLE (\w+)", statement)) and made[1] not in rebuilt:
            undo.append(f"DROP TABLE {made[1]}")
        elif added := re.match(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", statement):
            undo.append(f"ALTER TABLE {added[1]} DROP COLUMN {added[2]}")
        else:  # (an index goes with its table or column; a rebuild's other statements are undone with its copy)
            assert statement.startswith(("CREATE INDEX", "CREATE UNIQUE INDEX", "UPDATE", "CREATE TABLE", "DROP TABLE",
                                         "INSERT INTO")), statement
    return undo


def test_a_postgresql_database_of_the_first_release_takes_every_later_step_and_has_the_declared_tables(
        postgres_url):
    """A database as the first PostgreSQL release (m009) left it takes each later step once, at its next start, and
    ends with exactly the tables a new database is made with: every column's type, nullability and default, every
    index. (Each step after m009 taken back: its tables and columns dropped, its record deleted.)"""
    import psycopg

    from storage.migrations import SQL_STEPS, STEPS

    Store(postgres_url).close()
    declared = _postgresql_schema(postgres_url)
    later = STEPS[STEPS.index("m009_leases") + 1:]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in reversed(later):
            for undo in _undo(SQL_STEPS[name]):
                conn.execute(undo)
            conn.execute("DELETE FROM _finetune_migrations WHERE name = %s", (name,))
    assert _postgresql_schema(postgres_url) != declared  # (taken back)
    for _ in range(2):  # the second start finds nothing to do
        Store(postgres_url).close()
    assert _postgresql_schema(postgres_url) == declared
    with psycopg.connect(postgres_url) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT name FROM _finetune_migrations")) == sorted(STEPS)
    store = Store(postgres_url)
    try:  # and the bot's work runs on it
        store.follows.follow("C1", {"id": "j1", "provider": "openai", "status": "running"}, final=False, team_id="T",
                             user_id="U1", origin="start", recorded={"estimate": 2.5})
        assert store.follows.job("j1", "openai")["estimate"] == 2.5
        store.channels.set_channel_settings("C1", "U1", budget=100.0)
        assert (store.channels.channel_settings("C1")["watchdog"],
                store.channels.channel_settings("C1")["budget"]) == ("warn", 100.0)
        assert store.spend.hold(team_id="T", channel_id="C1", user_id="U1", provider="openai", command={},
                                estimate=1.0, reason="r")
        store.watch.record_reading("openai", "j1", 1, 2.0, None)
    finally:
        store.close()


def test_a_database_from_before_m011_takes_it_with_its_findings_said_on_both_engines(database):
    """The watchdog's findings recorded before m011 were said when made: none of them is taken for an interrupted
    cancel (which would cancel a job a second time and warn again)."""
    from storage import Store
    from storage.engines import is_postgres

    Store(database).close()
    if is_postgres(database):
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:  # back to how m010 left it, with a finding
            conn.execute("ALTER TABLE watch_marks DROP COLUMN said_at")
            conn.execute("INSERT INTO watch_marks (provider, job_id, kind, detail, at) VALUES"
                         " ('openai', 'j1', 'nan', '{}', 10)")
            conn.execute("DELETE FROM _finetune_migrations WHERE name = 'm011_watch_marks_said'")
    else:
        from sqlite_utils import Database

        db = Database(database)
        db["watch_marks"].transform(drop={"said_at"})
        db["watch_marks"].insert({"provider": "openai", "job_id": "j1", "kind": "nan", "detail": "{}", "at": 10})
        db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm011_watch_marks_said'")
        db.conn.commit()
        db.close()
    store = Store(database)
    try:
        assert store.watch.marks("openai", "j1") == ["nan"]
        assert store.watch.unsaid(older_than=0) == []
        assert store.watch.claim("openai", "j1", "nan", {}, lambda followers: True) is None  # said once, still
    finally:
        store.close()
