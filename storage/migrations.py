"""Schema of finetune-bot's database, as sqlite-utils migrations (applied in order, each once)."""

from collections.abc import Callable
from typing import Any

from storage.optional_imports import leaving_out

with leaving_out("numpy", "pandas"):  # sqlite-utils stores their values when installed; we store none
    from sqlite_utils import Database, Migrations

migrations = Migrations("finetune-bot")
STEPS: list[str] = []  # every step's name, in order: what a database of today's schema has had applied

# PostgreSQL: a new database is created from the declared tables (storage/schema.py, which tests/test_schema.py keeps
# equal to what these steps build) and marked as having every step. A step added later changes the declared tables
# and also registers here what an existing PostgreSQL database needs (a function given a SQLAlchemy connection);
# storage/engines.py applies those not yet recorded, once, under the migration lock. (PostgreSQL came with m009_leases:
# every later step needs its PostgreSQL form; tests/test_schema.py checks.)
POSTGRES_STEPS: dict[str, Callable[[Any], None]] = {}


def step(fn: Callable[[Database], None]) -> Callable[[Database], None]:
    """A step of the schema (SQLite's, applied by sqlite-utils); its name is recorded in STEPS."""
    STEPS.append(fn.__name__)
    return migrations()(fn)


def postgres_step(name: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """What step `name` does to an existing PostgreSQL database."""

    def register(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        POSTGRES_STEPS[name] = fn
        return fn

    return register


def sql_step(name: str, *statements: str) -> None:
    """A step written once and run on both engines: portable SQL (TEXT, BIGINT, DOUBLE PRECISION, PRIMARY KEY, NOT
    NULL, CREATE INDEX …), applied by sqlite-utils on SQLite and under the migration lock on PostgreSQL. New steps
    are written this way; storage/schema.py declares the tables' final shape, which tests/test_schema.py keeps equal
    to what the steps build on SQLite."""

    def on_sqlite(db: Database) -> None:
        for statement in statements:
            db.execute(statement)

    on_sqlite.__name__ = name
    step(on_sqlite)

    @postgres_step(name)
    def on_postgres(conn: Any) -> None:
        for statement in statements:
            conn.exec_driver_sql(statement.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1))


class SchemaStepMissing(Exception):
    """An existing PostgreSQL database lacks a step that has no PostgreSQL form (the engine says so in one line)."""


def apply_postgres(conn) -> None:  # noqa: ANN001 - a SQLAlchemy connection
    """A new database: the declared tables, marked as having every step. An existing one: each step it lacks."""
    import time

    from sqlalchemy import inspect

    from storage.schema import metadata

    new = not inspect(conn).has_table("jobs")
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS _finetune_migrations (name TEXT PRIMARY KEY,"
                         " applied_at DOUBLE PRECISION NOT NULL)")
    if new:
        metadata.create_all(conn)
        missing = []
    else:
        applied = {row[0] for row in conn.exec_driver_sql("SELECT name FROM _finetune_migrations")}
        missing = [name for name in STEPS if name not in applied]
        unknown = [name for name in missing if name not in POSTGRES_STEPS]
        if unknown:
            raise SchemaStepMissing(f"this database lacks schema step {unknown[0]}, which has no PostgreSQL form: "
                                "it was created by a bot older than this one's first PostgreSQL release")
    for name in missing:
        POSTGRES_STEPS[name](conn)
    for name in STEPS if new else missing:
        conn.exec_driver_sql("INSERT INTO _finetune_migrations (name, applied_at) VALUES (%(name)s, %(at)s)"
                             " ON CONFLICT DO NOTHING", {"name": name, "at": time.time()})


@step
def m001_initial(db: Database) -> None:
    db["jobs"].create(
        {
            "id": str,
            "status": str,
            "final": int,
            "model": str,
            "fine_tuned_model": str,
            "trained_tokens": int,
            "training_file": str,
            "suffix": str,
            "created_at": int,
            "finished_at": int,
            "error_code": str,
            "error_message": str,
            "observed_at": float,
            "polled_at": float,
        },
        pk="id",
        not_null={"status", "final"},
        defaults={"final": 0},
    )
    db["subscriptions"].create(
        {
            "channel_id": str,
            "job_id": str,
            "team_id": str,
            "user_id": str,
            "origin": str,
            "created_at": float,
            "delivery_error": str,
        },
        pk=("channel_id", "job_id"),
        not_null={"channel_id", "job_id"},
    )
    db["subscriptions"].create_index(["job_id"])
    # The outbox: one row per job, channel and outcome. Its primary key is what makes an announcement unique.
    db["announcements"].create(
        {
            "key": str,
            "job_id": str,
            "channel_id": str,
            "outcome": str,
            "user_id": str,
            "state": str,
            "attempts": int,
            "created_at": float,
            "next_attempt_at": float,
            "lease_until": float,
            "claimed_by": str,
            "uncertain": int,
            "sent_at": float,
            "message_ts": str,
            "last_error": str,
        },
        pk="key",
        not_null={"job_id", "channel_id", "outcome", "state"},
        defaults={"attempts": 0, "uncertain": 0},
    )
    db["announcements"].create_index(["state", "next_attempt_at"])
    db["webhook_deliveries"].create({"webhook_id": str, "received_at": float}, pk="webhook_id")


@step
def m002_foundation(db: Database) -> None:
    # Who an announcement is for, carried on the row so a direct message about a refused channel is queued in the
    # same outbox (and retried by the same rules) as the announcement itself.
    db["announcements"].add_column("origin", str)
    db["announcements"].add_column("kind", str, not_null_default="announcement")
    db["announcements"].add_column("about_channel", str)
    db.execute("UPDATE announcements SET origin = (SELECT origin FROM subscriptions s"
               " WHERE s.job_id = announcements.job_id AND s.channel_id = announcements.channel_id)")
    db["webhook_deliveries"].create_index(["received_at"])
    # A start is written down before the provider is asked, so a crash in between cannot leave a billed job
    # that nobody follows: start-up reconciles what is left here by its request id.
    db["start_intents"].create(
        {
            "request_id": str,
            "team_id": str,
            "channel_id": str,
            "user_id": str,
            "response_url": str,
            "training_file": str,
            "model": str,
            "suffix": str,
            "created_at": float,
            "state": str,
            "job_id": str,
        },
        pk="request_id",
        not_null={"channel_id", "state", "created_at"},
    )
    db["start_intents"].create_index(["state", "created_at"])
    # Slack sends a fresh trigger_id with every command and click: one seen twice is a replay.
    db["seen_triggers"].create({"trigger_id": str, "seen_at": float}, pk="trigger_id")
    db["seen_triggers"].create_index(["seen_at"])
    db["health"].create({"id": int, "written_at": float}, pk="id")


@step
def m003_providers(db: Database) -> None:
    # Several providers at once: a job is named by (provider, id), since two providers may use the same id. Rows
    # written before this carry provider '' until start-up names the OpenAI-shaped provider they came from
    # (`Follows.adopt_unnamed`): the schema cannot know whether that was OpenAI or Azure.
    db["jobs_new"].create(
        {
            "provider": str,
            "id": str,
            "status": str,
            "state": str,
            "final": int,
            "model": str,
            "fine_tuned_model": str,
            "trained_tokens": int,
            "training_file": str,
            "suffix": str,
            "created_at": int,
            "finished_at": int,
            "error_code": str,
            "error_message": str,
            "observed_at": float,
            "polled_at": float,
        },
        pk=("provider", "id"),
        not_null={"provider", "status", "final"},
        defaults={"final": 0, "provider": ""},
    )
    db.execute(
        "INSERT INTO jobs_new (provider, id, status, state, final, model, fine_tuned_model, trained_tokens,"
        " training_file, suffix, created_at, finished_at, error_code, error_message, observed_at, polled_at)"
        " SELECT '', id, status, CASE WHEN final THEN status ELSE 'going' END, final, model, fine_tuned_model,"
        " trained_tokens, training_file, suffix, created_at, finished_at, error_code, error_message, observed_at,"
        " polled_at FROM jobs"
    )
    db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE jobs_new RENAME TO jobs")
    db["jobs"].create_index(["final"])

    db["subscriptions_new"].create(
        {
            "channel_id": str,
            "provider": str,
            "job_id": str,
            "team_id": str,
            "user_id": str,
            "origin": str,
            "created_at": float,
            "delivery_error": str,
        },
        pk=("channel_id", "provider", "job_id"),
        not_null={"channel_id", "provider", "job_id"},
        defaults={"provider": ""},
    )
    db.execute(
        "INSERT INTO subscriptions_new (channel_id, provider, job_id, team_id, user_id, origin, created_at,"
        " delivery_error) SELECT channel_id, '', job_id, team_id, user_id, origin, created_at, delivery_error"
        " FROM subscriptions"
    )
    db.execute("DROP TABLE subscriptions")
    db.execute("ALTER TABLE subscriptions_new RENAME TO subscriptions")
    db["subscriptions"].create_index(["provider", "job_id"])

    # An announcement's key begins with its provider: '{provider}:{job}:{channel}:{outcome}'.
    db["announcements"].add_column("provider", str, not_null_default="")
    db.execute("UPDATE announcements SET key = ':' || key")
    db["start_intents"].add_column("provider", str)


@step
def m004_shared_answers(db: Database) -> None:
    # A model's answer shown only to whoever asked, kept a day so its "Share in channel" button can post it.
    db["shared_answers"].create({"id": str, "user_id": str, "channel_id": str, "message": str, "created_at": float},
                                pk="id")
    db["shared_answers"].create_index(["created_at"])


@step
def m005_channel_settings(db: Database) -> None:
    # What a channel hears: every outcome or failures only, and whether announcements mention who started a job.
    db["channel_settings"].create(
        {"channel_id": str, "outcomes": str, "mentions": int, "updated_by": str, "updated_at": float},
        pk="channel_id", not_null={"outcomes", "mentions"}, defaults={"outcomes": "all", "mentions": 1},
    )


@step
def m006_cards(db: Database) -> None:
    # A job's card: one message per following channel, edited in place, with progress in its thread. Its ts is kept
    # with the subscription ('' once Slack says it is gone, so the outcome falls back to a plain message).
    db["subscriptions"].add_column("card_ts", str)
    db["subscriptions"].add_column("card_revision", int, not_null_default=0)  # the job's revision the card shows
    db["subscriptions"].add_column("progress_at", float)  # when the last progress reply was queued: the throttle
    db["subscriptions"].add_column("progress_step", int)
    # A job's revision counts its status changes; each change is one card edit (keyed by it, so queued once).
    db["jobs"].add_column("revision", int, not_null_default=0)
    # What a card edit or progress reply is about (the revision, the step and loss), as JSON.
    db["announcements"].add_column("detail", str)
    db["channel_settings"].add_column("cards", int, not_null_default=1)
    db["channel_settings"].add_column("progress", int, not_null_default=1)
    db["channel_settings"].add_column("progress_minutes", int, not_null_default=5)


@step
def m007_shared_once(db: Database) -> None:
    # When a kept answer was shared: a second click on its button (a double click, a second process) shares nothing.
    db["shared_answers"].add_column("shared_at", float)


@step
def m008_forms_and_indexes(db: Database) -> None:
    # Each form the bot opened, by the unguessable id it carries in its private_metadata (recorded before Slack is
    # asked to open it, so no submission can come first): who opened it and from where (a submission is judged by
    # what was recorded, not by what it carries), and when it was submitted (a replayed submission does nothing).
    db["open_forms"].create(
        {"form_id": str, "kind": str, "user_id": str, "team_id": str, "channel_id": str, "provider": str,
         "job_id": str, "created_at": float, "submitted_at": float},
        pk="form_id", not_null={"form_id", "kind", "user_id"},
    )
    db["open_forms"].create_index(["created_at"])
    # The scans on hot paths: a job's cards and announcements, a job id at any provider, a model's job, a person's
    # direct-message follows.
    db["announcements"].create_index(["provider", "job_id", "channel_id"], if_not_exists=True)
    db["jobs"].create_index(["id"], if_not_exists=True)
    db["jobs"].create_index(["fine_tuned_model"], if_not_exists=True)
    db["subscriptions"].create_index(["user_id"], if_not_exists=True)


@step
def m009_leases(db: Database) -> None:
    # Turns shared by every process on the database (replicas): who runs the poll cycle, the metric reads and the
    # maintenance this interval, and who posts in a channel now (its pace and Slack's Retry-After are that holder's).
    # A holder that dies is replaced once its turn ends.
    db["leases"].create({"name": str, "holder": str, "held_until": float}, pk="name",
                        not_null={"name", "holder", "held_until"})


# What m010 adds to existing tables, in both engines' words: (table, column, SQLite type, PostgreSQL type, default).
_M010_COLUMNS = (
    ("jobs", "cost", float, "DOUBLE PRECISION", None),  # what the run cost, US dollars, when known
    ("jobs", "estimate", float, "DOUBLE PRECISION", None),  # the bot's estimate when it was started
    ("jobs", "approved_by", str, "TEXT", None),  # who approved a held start
    ("jobs", "metrics_read_at", float, "DOUBLE PRECISION", None),  # the watchdog's last read of its metrics
    ("start_intents", "estimate", float, "DOUBLE PRECISION", None),
    ("start_intents", "approved_by", str, "TEXT", None),
    ("channel_settings", "confirm_above", float, "DOUBLE PRECISION", None),  # NULL: off
    ("channel_settings", "budget", float, "DOUBLE PRECISION", None),  # a month's, US dollars; NULL: off
    ("channel_settings", "watchdog", str, "TEXT", "warn"),
)
_M010_TABLES = ("file_tokens", "held_starts", "job_readings", "watch_marks")


@step
def m010_spend_and_watchdog(db: Database) -> None:
    for table, column, kind, _, default in _M010_COLUMNS:
        if default is None:
            db[table].add_column(column, kind)
        else:
            db[table].add_column(column, kind, not_null_default=default)
    # The tokens a file at a provider bills per epoch, counted once (read through the provider's files API), by the
    # model it was counted for (its tokenizer and its longest example decide the count).
    db["file_tokens"].create({"provider": str, "file_id": str, "model": str, "billable_per_epoch": int,
                              "examples": int, "counted_at": float},
                             pk=("provider", "file_id", "model"), not_null={"provider", "file_id", "model"})
    # A start held for confirmation (above the channel's threshold, past its budget): what it would start, for whom,
    # and what became of it. Nothing of it reaches the provider until it is released, once.
    db["held_starts"].create({"id": str, "team_id": str, "channel_id": str, "user_id": str, "provider": str,
                              "command": str, "estimate": float, "reason": str, "created_at": float,
                              "expires_at": float, "state": str, "decided_by": str, "decided_at": float,
                              "message_ts": str},
                             pk="id", not_null={"id", "channel_id", "user_id", "command", "state"})
    db["held_starts"].create_index(["created_at"])
    # Each training step the watchdog has read of a running job: the readings its rules look at.
    db["job_readings"].create({"provider": str, "job_id": str, "step": int, "train_loss": float,
                               "valid_loss": float, "read_at": float},
                              pk=("provider", "job_id", "step"), not_null={"provider", "job_id", "step"})
    # What the watchdog has said (or done) of a job, once per job and kind.
    db["watch_marks"].create({"provider": str, "job_id": str, "kind": str, "detail": str, "at": float},
                             pk=("provider", "job_id", "kind"), not_null={"provider", "job_id", "kind"})


@postgres_step("m010_spend_and_watchdog")
def _m010_postgres(conn: Any) -> None:
    from storage.schema import metadata

    for table, column, _, kind, default in _M010_COLUMNS:
        tail = f" NOT NULL DEFAULT '{default}'" if default is not None else ""
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}{tail}")
    for name in _M010_TABLES:
        metadata.tables[name].create(conn, checkfirst=True)


@step
def m011_watch_marks_said(db: Database) -> None:
    # When a finding's warning was queued. A finding whose channel asked for a cancel is claimed before the cancel is
    # sent and said after it; one left unsaid (its process stopped in between) is taken over and said by maintenance.
    # Marks from before were said when they were made.
    db["watch_marks"].add_column("said_at", float)
    db.execute("UPDATE watch_marks SET said_at = at")


@postgres_step("m011_watch_marks_said")
def _m011_postgres(conn: Any) -> None:
    conn.exec_driver_sql("ALTER TABLE watch_marks ADD COLUMN IF NOT EXISTS said_at DOUBLE PRECISION")
    conn.exec_driver_sql("UPDATE watch_marks SET said_at = at WHERE said_at IS NULL")


_M012_TABLES = ("moves", "moved_files", "model_calls")


@step
def m012_moves(db: Database) -> None:
    # A fine-tune moved to another provider, claimed once before its first upload; and the files moves uploaded, by
    # content, so the same content moved to the same provider is uploaded once.
    db["moves"].create({"id": str, "team_id": str, "channel_id": str, "user_id": str, "source_provider": str,
                        "source_job": str, "target_provider": str, "options": str, "state": str, "new_job": str,
                        "note": str, "created_at": float, "updated_at": float, "lease_until": float},
                       pk="id", not_null={"id", "team_id", "channel_id", "user_id", "source_provider", "source_job",
                                          "target_provider", "state"})
    db["moves"].create_index(["team_id", "source_provider", "source_job", "target_provider"], unique=True)
    db["moves"].create_index(["target_provider", "new_job"])
    db["moved_files"].create({"provider": str, "sha256": str, "file_id": str, "uploaded_at": float},
                             pk=("provider", "sha256"), not_null={"provider", "sha256", "file_id"})
    # The move a start makes, so a start a crash interrupted is linked to its move when it is reconciled.
    db["start_intents"].add_column("move_id", str)
    # Prompts a person sent to models, for TRY_LIMIT_PER_MINUTE (every replica counts the same rows).
    db["model_calls"].create({"id": str, "user_id": str, "at": float, "count": int}, pk="id",
                             not_null={"id", "user_id", "at", "count"}, defaults={"count": 1})
    db["model_calls"].create_index(["user_id", "at"])


@postgres_step("m012_moves")
def _m012_postgres(conn: Any) -> None:
    from storage.schema import metadata

    for name in _M012_TABLES:
        metadata.tables[name].create(conn, checkfirst=True)
    conn.exec_driver_sql("ALTER TABLE start_intents ADD COLUMN IF NOT EXISTS move_id TEXT")


_M013_TABLES = ("installations", "oauth_states", "workspace_keys", "channel_workspaces")


@step
def m013_workspaces(db: Database) -> None:
    # Slack's installations of the app (OAuth), one per workspace (or per enterprise for an org-wide install): its
    # tokens sealed with ENCRYPTION_KEYS, and who is refreshing them now (a rotating token is refreshed once).
    db["installations"].create({"key": str, "enterprise_id": str, "team_id": str, "is_enterprise_install": int,
                                "app_id": str, "bot_user_id": str, "bot_id": str, "bot_scopes": str,
                                "bot_token": str, "bot_refresh_token": str, "bot_token_expires_at": float,
                                "installer_user_id": str, "installed_at": float, "refresh_holder": str,
                                "refresh_until": float},
                               pk="key", not_null={"key", "bot_token"})
    # The one-time `state` of each "Add to Slack" click, until it comes back or expires.
    db["oauth_states"].create({"state": str, "expires_at": float}, pk="state", not_null={"state", "expires_at"})
    # Each workspace's own provider keys, sealed; only their last four characters are ever shown.
    db["workspace_keys"].create({"workspace": str, "provider": str, "sealed": str, "last4": str, "set_by": str,
                                 "set_at": float},
                                pk=("workspace", "provider"), not_null={"workspace", "provider", "sealed"})
    # Which workspace a channel belongs to (learned from each request), so a post uses that workspace's token.
    db["channel_workspaces"].create({"channel_id": str, "workspace": str, "seen_at": float}, pk="channel_id",
                                    not_null={"channel_id", "workspace"})
    db["channel_workspaces"].create_index(["workspace"])


@postgres_step("m013_workspaces")
def _m013_postgres(conn: Any) -> None:
    from storage.schema import metadata

    for name in _M013_TABLES:
        metadata.tables[name].create(conn, checkfirst=True)


@step
def m014_home(db: Database) -> None:
    # Whose App Home is owed a redraw (a job they started changed state): claimed once, by one process.
    db["home_refreshes"].create({"user_id": str, "due_at": float}, pk="user_id", not_null={"user_id", "due_at"})
    db["home_refreshes"].create_index(["due_at"])


@postgres_step("m014_home")
def _m014_postgres(conn: Any) -> None:
    from storage.schema import metadata

    metadata.tables["home_refreshes"].create(conn, checkfirst=True)


@step
def m015_job_owners(db: Database) -> None:
    # OAuth mode: the workspace each job belongs to (the one that started it, or first named it), so another
    # workspace on the same provider account never sees, follows or cancels it.
    db["job_owners"].create({"provider": str, "job_id": str, "workspace": str, "claimed_at": float},
                            pk=("provider", "job_id"), not_null={"provider", "job_id", "workspace"})
    db["job_owners"].create_index(["workspace"])


@postgres_step("m015_job_owners")
def _m015_postgres(conn: Any) -> None:
    from storage.schema import metadata

    metadata.tables["job_owners"].create(conn, checkfirst=True)


# Which processes announced a presence lock (PostgreSQL: a replica elsewhere that died is told apart from a living
# one by its lock). Kept on SQLite too, so that both engines have the same tables.
sql_step("m016_presences", "CREATE TABLE presences (worker_id TEXT PRIMARY KEY NOT NULL, since DOUBLE PRECISION)")
