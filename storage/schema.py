"""finetune-bot's tables declared once, in SQLAlchemy Core, for every engine (SQLite, PostgreSQL).

This is the schema that `storage/migrations.py` builds on SQLite step by step, and that a new PostgreSQL database is
made with (its later steps, written once for both engines, rebuild it on an existing one); `tests/test_schema.py`
checks both, column by column. Imported only where an engine other than the embedded SQLite default is used:
SQLAlchemy is not loaded by a bot that never needs it.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Identity, Index, MetaData, Table, Text

metadata = MetaData()


def _text(name: str, **kw) -> Column:
    return Column(name, Text, **kw)


def _int(name: str, **kw) -> Column:
    # 64 bits everywhere: SQLite's INTEGER is, and provider timestamps and token counts outgrow 32.
    return Column(name, BigInteger, **kw)


def _real(name: str, **kw) -> Column:
    return Column(name, Float(53), **kw)  # double precision: times in seconds with their fractions


jobs = Table(
    "jobs", metadata,
    _text("provider", primary_key=True, server_default=""),
    _text("id", primary_key=True),
    _text("status", nullable=False),
    _text("state"),
    _int("final", nullable=False, server_default="0"),
    _text("model"),
    _text("fine_tuned_model"),
    _int("trained_tokens"),
    _text("training_file"),
    _text("suffix"),
    _int("created_at"),
    _int("finished_at"),
    _text("error_code"),
    _text("error_message"),
    _real("observed_at"),
    _real("polled_at"),
    _int("revision", nullable=False, server_default="0"),
    _real("cost"),
    _real("estimate"),
    _text("approved_by"),
    _real("metrics_read_at"),
    Index("idx_jobs_final", "final"),
    Index("idx_jobs_id", "id"),
    Index("idx_jobs_fine_tuned_model", "fine_tuned_model"),
)

subscriptions = Table(
    "subscriptions", metadata,
    _text("channel_id", primary_key=True),
    _text("provider", primary_key=True, server_default=""),
    _text("job_id", primary_key=True),
    _text("team_id"),
    _text("user_id"),
    _text("origin"),
    _real("created_at"),
    _text("delivery_error"),
    _text("card_ts"),
    _int("card_revision", nullable=False, server_default="0"),
    _real("progress_at"),
    _int("progress_step"),
    Index("idx_subscriptions_provider_job_id", "provider", "job_id"),
    Index("idx_subscriptions_user_id", "user_id"),
)

# The outbox: one row per job, channel and outcome (or card, edit, reply). Its key is what makes a post happen once.
announcements = Table(
    "announcements", metadata,
    _text("key", primary_key=True),
    _text("job_id", nullable=False),
    _text("channel_id", nullable=False),
    _text("outcome", nullable=False),
    _text("user_id"),
    _text("state", nullable=False),
    _int("attempts", server_default="0"),
    _real("created_at"),
    _real("next_attempt_at"),
    _real("lease_until"),
    _text("claimed_by"),
    _int("uncertain", server_default="0"),
    _real("sent_at"),
    _text("message_ts"),
    _text("last_error"),
    _text("origin"),
    _text("kind", nullable=False, server_default="announcement"),
    _text("about_channel"),
    _text("provider", nullable=False, server_default=""),
    _text("detail"),
    # The order rows were queued in (a status change's thread reply before the steps after it): SQLite's own rowid,
    # which the SQLite tables have without declaring it; PostgreSQL needs the column.
    Column("seq", BigInteger, Identity(), nullable=False, info={"sqlite": "rowid"}),
    Index("idx_announcements_state_next_attempt_at", "state", "next_attempt_at"),
    Index("idx_announcements_provider_job_id_channel_id", "provider", "job_id", "channel_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    _text("webhook_id", primary_key=True),
    _real("received_at"),
    Index("idx_webhook_deliveries_received_at", "received_at"),
)

# A start written down before the provider is asked, so a crash in between is reconciled by its request id.
start_intents = Table(
    "start_intents", metadata,
    _text("request_id", primary_key=True),
    _text("team_id"),
    _text("channel_id", nullable=False),
    _text("user_id"),
    _text("response_url"),
    _text("training_file"),
    _text("model"),
    _text("suffix"),
    _real("created_at", nullable=False),
    _text("state", nullable=False),
    _text("job_id"),
    _text("provider"),
    _real("estimate"),
    _text("approved_by"),
    _text("move_id"),
    _text("workspace"),  # OAuth mode: whose budget its estimate is reserved from while it is under way
    Index("idx_start_intents_state_created_at", "state", "created_at"),
)

seen_triggers = Table(
    "seen_triggers", metadata,
    _text("trigger_id", primary_key=True),
    _real("seen_at"),
    Index("idx_seen_triggers_seen_at", "seen_at"),
)

health = Table(
    "health", metadata,
    _int("id", primary_key=True, autoincrement=False),
    _real("written_at"),
)

shared_answers = Table(
    "shared_answers", metadata,
    _text("id", primary_key=True),
    _text("user_id"),
    _text("channel_id"),
    _text("message"),
    _real("created_at"),
    _real("shared_at"),
    Index("idx_shared_answers_created_at", "created_at"),
)

# A channel's settings, per workspace (OAuth mode: a Slack Connect channel is in several; '' for a bot of one
# workspace, and for what a channel had before OAuth was turned on, which each workspace there sees until it changes
# its own).
channel_settings = Table(
    "channel_settings", metadata,
    _text("workspace", primary_key=True, server_default=""),
    _text("channel_id", primary_key=True),
    _text("outcomes", nullable=False, server_default="all"),
    _int("mentions", nullable=False, server_default="1"),
    _text("updated_by"),
    _real("updated_at"),
    _int("cards", nullable=False, server_default="1"),
    _int("progress", nullable=False, server_default="1"),
    _int("progress_minutes", nullable=False, server_default="5"),
    _real("confirm_above"),
    _real("budget"),
    _text("watchdog", nullable=False, server_default="warn"),
)

open_forms = Table(
    "open_forms", metadata,
    _text("form_id", primary_key=True),
    _text("kind", nullable=False),
    _text("user_id", nullable=False),
    _text("team_id"),
    _text("channel_id"),
    _text("provider"),
    _text("job_id"),
    _real("created_at"),
    _real("submitted_at"),
    Index("idx_open_forms_created_at", "created_at"),
)

# Turns shared by every process on the database: the poll cycle's, the maintenance's, each channel's posts.
leases = Table(
    "leases", metadata,
    _text("name", primary_key=True),
    _text("holder", nullable=False),
    _real("held_until", nullable=False),
)

file_tokens = Table(
    "file_tokens", metadata,
    _text("provider", primary_key=True),
    _text("file_id", primary_key=True),
    _text("model", primary_key=True),
    _int("billable_per_epoch"),
    _int("examples"),
    _real("counted_at"),
)

# A start held for confirmation or approval; nothing of it reaches the provider until it is released, once.
held_starts = Table(
    "held_starts", metadata,
    _text("id", primary_key=True),
    _text("team_id"),
    _text("channel_id", nullable=False),
    _text("user_id", nullable=False),
    _text("provider"),
    _text("command", nullable=False),
    _real("estimate"),
    _text("reason"),
    _real("created_at"),
    _real("expires_at"),
    _text("state", nullable=False),
    _text("decided_by"),
    _real("decided_at"),
    _text("message_ts"),
    _text("workspace"),  # OAuth mode: the workspace that asked (its keys and its money start it, whoever approves)
    Index("idx_held_starts_created_at", "created_at"),
)

job_readings = Table(
    "job_readings", metadata,
    _text("provider", primary_key=True),
    _text("job_id", primary_key=True),
    _int("step", primary_key=True, autoincrement=False),
    _real("train_loss"),
    _real("valid_loss"),
    _real("read_at"),
)

watch_marks = Table(
    "watch_marks", metadata,
    _text("provider", primary_key=True),
    _text("job_id", primary_key=True),
    _text("kind", primary_key=True),
    _text("detail"),
    _real("at"),
    _real("said_at"),
)

# A fine-tune moved to another provider: claimed once (per workspace, source job and target), before the first
# upload, so double clicks, retries and replicas make one upload and one job.
moves = Table(
    "moves", metadata,
    _text("id", primary_key=True),
    _text("team_id", nullable=False),
    _text("channel_id", nullable=False),
    _text("user_id", nullable=False),
    _text("source_provider", nullable=False),
    _text("source_job", nullable=False),
    _text("target_provider", nullable=False),
    _text("options"),
    _text("state", nullable=False),
    _text("new_job"),
    _text("note"),
    _real("created_at"),
    _real("updated_at"),
    _real("lease_until"),
    Index("idx_moves_source", "team_id", "source_provider", "source_job", "target_provider", unique=True),
    Index("idx_moves_new_job", "target_provider", "new_job"),
)

# A file uploaded to a provider by a move, by its content's SHA-256: the same content moved there again reuses it.
moved_files = Table(
    "moved_files", metadata,
    _text("provider", primary_key=True),
    _text("sha256", primary_key=True),
    _text("file_id", nullable=False),
    _real("uploaded_at"),
)

# Prompts a person sent to models (try, Try it, compare's examples), for TRY_LIMIT_PER_MINUTE across replicas.
model_calls = Table(
    "model_calls", metadata,
    _text("id", primary_key=True),
    _text("user_id", nullable=False),
    _real("at", nullable=False),
    _int("count", nullable=False, server_default="1"),
    Index("idx_model_calls_user_id_at", "user_id", "at"),
)

# Slack's installations of the app (OAuth mode), one per workspace or, for an org-wide install, per enterprise (`key`
# is `T…` or `E…` with its id): the tokens are sealed with ENCRYPTION_KEYS (bot/vault.py); `refresh_holder` and
# `refresh_until` say which process is refreshing a rotating token now, so two replicas never both spend it.
installations = Table(
    "installations", metadata,
    _text("key", primary_key=True),
    _text("enterprise_id"),
    _text("team_id"),
    _int("is_enterprise_install"),
    _text("app_id"),
    _text("bot_user_id"),
    _text("bot_id"),
    _text("bot_scopes"),
    _text("bot_token", nullable=False),
    _text("bot_refresh_token"),
    _real("bot_token_expires_at"),
    _text("installer_user_id"),
    _real("installed_at"),
    _text("refresh_holder"),
    _real("refresh_until"),
)

# The one-time `state` of each "Add to Slack" click, until it comes back (used once) or expires.
oauth_states = Table(
    "oauth_states", metadata,
    _text("state", primary_key=True),
    _real("expires_at", nullable=False),
)

# Each workspace's own provider keys, sealed with ENCRYPTION_KEYS; `last4` is all that is ever shown of one.
workspace_keys = Table(
    "workspace_keys", metadata,
    _text("workspace", primary_key=True),
    _text("provider", primary_key=True),
    _text("sealed", nullable=False),
    _text("last4"),
    _text("set_by"),
    _real("set_at"),
)

# The workspace a channel belongs to, learned from each request: a post there uses that workspace's token.
channel_workspaces = Table(
    "channel_workspaces", metadata,
    _text("channel_id", primary_key=True),
    _text("workspace", nullable=False),
    _real("seen_at"),
    Index("idx_channel_workspaces_workspace", "workspace"),
)

# Whose App Home is owed a redraw because a job they started changed state; one process claims each.
home_refreshes = Table(
    "home_refreshes", metadata,
    _text("user_id", primary_key=True),
    _real("due_at", nullable=False),
    Index("idx_home_refreshes_due_at", "due_at"),
)

# Replicas on PostgreSQL that hold a presence lock (a session advisory lock on their listening connection) while they
# run: a turn held by one whose lock is free belongs to a process that is gone, wherever it ran (bot/turns.py).
presences = Table(
    "presences", metadata,
    _text("worker_id", primary_key=True),
    _real("since"),
)

# OAuth mode: the workspace each job belongs to (the one that started it, or first named it).
job_owners = Table(
    "job_owners", metadata,
    _text("provider", primary_key=True),
    _text("job_id", primary_key=True),
    _text("workspace", nullable=False),
    _real("claimed_at"),
    Index("idx_job_owners_workspace", "workspace"),
)
