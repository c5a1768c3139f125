"""Schema of finetune-bot's database, as sqlite-utils migrations (applied in order, each once)."""

from sqlite_utils import Database, Migrations

migrations = Migrations("finetune-bot")


@migrations()
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
