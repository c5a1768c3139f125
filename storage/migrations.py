"""Schema of finetune-bot's database, as sqlite-utils migrations (applied in order, each once)."""

from collections.abc import Callable

from storage.optional_imports import leaving_out

with leaving_out("numpy", "pandas"):  # sqlite-utils stores their values when installed; we store none
    from sqlite_utils import Database, Migrations

migrations = Migrations("finetune-bot")
STEPS: list[str] = []  # every step's name, in order: what a database of today's schema has had applied
# The steps written once, in portable SQL, by name: every step since PostgreSQL came (m009_leases). A new PostgreSQL
# database is made from the declared tables (storage/schema.py) and marked as having every step; an existing one
# takes each of these it lacks, once, under the migration lock (storage/engines.py). tests/test_schema.py checks that
# every step builds the declared tables on SQLite and that these rebuild them on PostgreSQL, types included.
SQL_STEPS: dict[str, tuple[str, ...]] = {}


def step(fn: Callable[[Database], None]) -> Callable[[Database], None]:
    """A step SQLite alone took (m001 to m009, from before PostgreSQL), applied by sqlite-utils; named in STEPS."""
    STEPS.append(fn.__name__)
    return migrations()(fn)


def sql_step(name: str, *statements: str) -> None:
    """A step written once and run on both engines: portable SQL (TEXT, BIGINT, DOUBLE PRECISION, PRIMARY KEY, NOT
    NULL, CREATE INDEX …), applied by sqlite-utils on SQLite and under the migration lock on PostgreSQL."""
    SQL_STEPS[name] = statements

    def on_sqlite(db: Database) -> None:
        for statement in statements:
            db.execute(statement)

    on_sqlite.__name__ = name
    step(on_sqlite)


class SchemaStepMissing(Exception):
    """An existing PostgreSQL database lacks a step SQLite alone took (the engine says so in one line)."""


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
        unknown = [name for name in missing if name not in SQL_STEPS]
        if unknown:
            raise SchemaStepMissing(f"this database lacks schema step {unknown[0]}, which has no PostgreSQL form: "
                                "it was created by a bot older than this one's first PostgreSQL release")
    for name in missing:
        for statement in SQL_STEPS[name]:
            conn.exec_driver_sql(statement)
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


# Every step from here on is written once, in portable SQL, and run on both engines (`sql_step`).

# Spend and the watchdog: what a run cost and what the bot estimated; a start held for confirmation (nothing of it
# reaches the provider until it is released, once); the tokens a file bills per epoch, counted once per model; each
# training step the watchdog read of a running job; what the watchdog has said (or done) of a job, once per kind.
sql_step(
    "m010_spend_and_watchdog",
    "ALTER TABLE jobs ADD COLUMN cost DOUBLE PRECISION",
    "ALTER TABLE jobs ADD COLUMN estimate DOUBLE PRECISION",
    "ALTER TABLE jobs ADD COLUMN approved_by TEXT",
    "ALTER TABLE jobs ADD COLUMN metrics_read_at DOUBLE PRECISION",
    "ALTER TABLE start_intents ADD COLUMN estimate DOUBLE PRECISION",
    "ALTER TABLE start_intents ADD COLUMN approved_by TEXT",
    "ALTER TABLE channel_settings ADD COLUMN confirm_above DOUBLE PRECISION",
    "ALTER TABLE channel_settings ADD COLUMN budget DOUBLE PRECISION",
    "ALTER TABLE channel_settings ADD COLUMN watchdog TEXT NOT NULL DEFAULT 'warn'",
    "CREATE TABLE file_tokens (provider TEXT NOT NULL, file_id TEXT NOT NULL, model TEXT NOT NULL,"
    " billable_per_epoch BIGINT, examples BIGINT, counted_at DOUBLE PRECISION, PRIMARY KEY (provider, file_id, model))",
    "CREATE TABLE held_starts (id TEXT PRIMARY KEY NOT NULL, team_id TEXT, channel_id TEXT NOT NULL,"
    " user_id TEXT NOT NULL, provider TEXT, command TEXT NOT NULL, estimate DOUBLE PRECISION, reason TEXT,"
    " created_at DOUBLE PRECISION, expires_at DOUBLE PRECISION, state TEXT NOT NULL, decided_by TEXT,"
    " decided_at DOUBLE PRECISION, message_ts TEXT)",
    "CREATE INDEX idx_held_starts_created_at ON held_starts (created_at)",
    "CREATE TABLE job_readings (provider TEXT NOT NULL, job_id TEXT NOT NULL, step BIGINT NOT NULL,"
    " train_loss DOUBLE PRECISION, valid_loss DOUBLE PRECISION, read_at DOUBLE PRECISION,"
    " PRIMARY KEY (provider, job_id, step))",
    "CREATE TABLE watch_marks (provider TEXT NOT NULL, job_id TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT,"
    " at DOUBLE PRECISION, PRIMARY KEY (provider, job_id, kind))",
)

# When a finding's warning was queued. A finding whose channel asked for a cancel is claimed before the cancel is sent
# and said after it; one left unsaid (its process stopped in between) is taken over and said by maintenance. Marks
# from before were said when they were made.
sql_step(
    "m011_watch_marks_said",
    "ALTER TABLE watch_marks ADD COLUMN said_at DOUBLE PRECISION",
    "UPDATE watch_marks SET said_at = at",
)

# A fine-tune moved to another provider, claimed once before its first upload; the files moves uploaded, by content,
# so the same content moved to the same provider is uploaded once; the move a start makes (a start a crash
# interrupted is linked to its move when it is reconciled); prompts a person sent to models, for TRY_LIMIT_PER_MINUTE
# (every replica counts the same rows).
sql_step(
    "m012_moves",
    "CREATE TABLE moves (id TEXT PRIMARY KEY NOT NULL, team_id TEXT NOT NULL, channel_id TEXT NOT NULL,"
    " user_id TEXT NOT NULL, source_provider TEXT NOT NULL, source_job TEXT NOT NULL, target_provider TEXT NOT NULL,"
    " options TEXT, state TEXT NOT NULL, new_job TEXT, note TEXT, created_at DOUBLE PRECISION,"
    " updated_at DOUBLE PRECISION, lease_until DOUBLE PRECISION)",
    "CREATE UNIQUE INDEX idx_moves_source ON moves (team_id, source_provider, source_job, target_provider)",
    "CREATE INDEX idx_moves_new_job ON moves (target_provider, new_job)",
    "CREATE TABLE moved_files (provider TEXT NOT NULL, sha256 TEXT NOT NULL, file_id TEXT NOT NULL,"
    " uploaded_at DOUBLE PRECISION, PRIMARY KEY (provider, sha256))",
    "ALTER TABLE start_intents ADD COLUMN move_id TEXT",
    "CREATE TABLE model_calls (id TEXT PRIMARY KEY NOT NULL, user_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,"
    " count BIGINT NOT NULL DEFAULT 1)",
    "CREATE INDEX idx_model_calls_user_id_at ON model_calls (user_id, at)",
)

# Slack's installations of the app (OAuth), one per workspace (or per enterprise for an org-wide install): its tokens
# sealed with ENCRYPTION_KEYS, and who is refreshing them now (a rotating token is refreshed once); the one-time
# `state` of each "Add to Slack" click; each workspace's own provider keys, sealed (only their last four characters
# are ever shown); which workspace a channel belongs to (learned from each request: a post uses its token).
sql_step(
    "m013_workspaces",
    "CREATE TABLE installations (key TEXT PRIMARY KEY NOT NULL, enterprise_id TEXT, team_id TEXT,"
    " is_enterprise_install BIGINT, app_id TEXT, bot_user_id TEXT, bot_id TEXT, bot_scopes TEXT,"
    " bot_token TEXT NOT NULL, bot_refresh_token TEXT, bot_token_expires_at DOUBLE PRECISION, installer_user_id TEXT,"
    " installed_at DOUBLE PRECISION, refresh_holder TEXT, refresh_until DOUBLE PRECISION)",
    "CREATE TABLE oauth_states (state TEXT PRIMARY KEY NOT NULL, expires_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE workspace_keys (workspace TEXT NOT NULL, provider TEXT NOT NULL, sealed TEXT NOT NULL, last4 TEXT,"
    " set_by TEXT, set_at DOUBLE PRECISION, PRIMARY KEY (workspace, provider))",
    "CREATE TABLE channel_workspaces (channel_id TEXT PRIMARY KEY NOT NULL, workspace TEXT NOT NULL,"
    " seen_at DOUBLE PRECISION)",
    "CREATE INDEX idx_channel_workspaces_workspace ON channel_workspaces (workspace)",
)

# Whose App Home is owed a redraw (a job they started changed state): claimed once, by one process.
sql_step(
    "m014_home",
    "CREATE TABLE home_refreshes (user_id TEXT PRIMARY KEY NOT NULL, due_at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX idx_home_refreshes_due_at ON home_refreshes (due_at)",
)

# OAuth mode: the workspace each job belongs to (the one that started it, or first named it), so another workspace on
# the same provider account never sees, follows or cancels it.
sql_step(
    "m015_job_owners",
    "CREATE TABLE job_owners (provider TEXT NOT NULL, job_id TEXT NOT NULL, workspace TEXT NOT NULL,"
    " claimed_at DOUBLE PRECISION, PRIMARY KEY (provider, job_id))",
    "CREATE INDEX idx_job_owners_workspace ON job_owners (workspace)",
)

# Which processes announced a presence lock (PostgreSQL: a replica elsewhere that died is told apart from a living
# one by its lock). Kept on SQLite too, so that both engines have the same tables.
sql_step("m016_presences", "CREATE TABLE presences (worker_id TEXT PRIMARY KEY NOT NULL, since DOUBLE PRECISION)")

# OAuth mode: a channel's settings are kept per workspace (a Slack Connect channel is in several, each with its own
# budget and thresholds); what a channel had before is kept under '' (seen by each workspace until it changes its
# own). The table is rebuilt (its key changes): copied aside, made again with the new key (under its usual name, so
# its key's index is named as a new database's), filled back. A start under way reserves its estimate from its own
# workspace's budget; a held start is started, once approved, as the workspace that asked for it.
sql_step(
    "m017_workspace_scope",
    "CREATE TABLE channel_settings_old AS SELECT * FROM channel_settings",
    "DROP TABLE channel_settings",
    "CREATE TABLE channel_settings (workspace TEXT NOT NULL DEFAULT '', channel_id TEXT NOT NULL,"
    " outcomes TEXT NOT NULL DEFAULT 'all', mentions BIGINT NOT NULL DEFAULT 1, updated_by TEXT,"
    " updated_at DOUBLE PRECISION, cards BIGINT NOT NULL DEFAULT 1, progress BIGINT NOT NULL DEFAULT 1,"
    " progress_minutes BIGINT NOT NULL DEFAULT 5, confirm_above DOUBLE PRECISION, budget DOUBLE PRECISION,"
    " watchdog TEXT NOT NULL DEFAULT 'warn', PRIMARY KEY (workspace, channel_id))",
    "INSERT INTO channel_settings (workspace, channel_id, outcomes, mentions, updated_by, updated_at, cards,"
    " progress, progress_minutes, confirm_above, budget, watchdog) SELECT '', channel_id, outcomes, mentions,"
    " updated_by, updated_at, cards, progress, progress_minutes, confirm_above, budget, watchdog"
    " FROM channel_settings_old",
    "DROP TABLE channel_settings_old",
    "ALTER TABLE start_intents ADD COLUMN workspace TEXT",
    "ALTER TABLE held_starts ADD COLUMN workspace TEXT",
)
