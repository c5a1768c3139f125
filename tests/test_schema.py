"""The tables declared once (storage/schema.py) are the tables the SQLite migrations build, and the same declaration
makes them on a real PostgreSQL server: one schema for both engines, kept in step by these tests."""

from __future__ import annotations

import sqlite3

import pytest

from storage import Store

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


def _declared() -> dict[str, dict]:
    from storage.schema import metadata

    return {
        table.name: {
            "columns": [c.name for c in table.columns],
            "key": [c.name for c in table.primary_key.columns],
            "not_null": {c.name for c in table.columns if not c.nullable and not c.primary_key},
            "indexes": {tuple(c.name for c in index.columns) for index in table.indexes},
        }
        for table in metadata.sorted_tables
    }


def test_the_declared_tables_are_the_tables_the_sqlite_migrations_build(tmp_path):
    migrated, declared = _migrated_sqlite(tmp_path), _declared()
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
