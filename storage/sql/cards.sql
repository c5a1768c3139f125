-- Job cards (storage/cards.py): each channel's card of a job, its edits when the job changes, and the progress
-- replies in its thread. A follow (`s`, with its channel's settings `c`) is due a progress reply when its card is
-- up, its channel wants progress, and its last reply (or read with nothing new) is at least the channel's interval
-- old (progress_follows).

-- name: card
-- A channel's card of a job: its outbox row's state, and (once posted) its ts and the revision it shows.
SELECT a.state, a.next_attempt_at, a.lease_until, a.last_error, s.card_ts, s.card_revision
FROM announcements a
JOIN subscriptions s ON s.channel_id = a.channel_id AND s.provider = a.provider AND s.job_id = a.job_id
WHERE a.key = :key;

-- name: card_edit_in_flight
SELECT 1 FROM announcements
WHERE provider = :provider AND job_id = :job_id AND channel_id = :channel_id AND kind = 'card_update'
  AND state = 'sending' AND key != :key AND lease_until > :now
LIMIT 1;

-- name: set_card_ts
UPDATE subscriptions SET card_ts = :ts WHERE channel_id = :channel_id AND provider = :provider AND job_id = :job_id;

-- name: set_card_revision
-- The revision a card shows only goes up (two edits finishing out of order).
UPDATE subscriptions SET card_revision = CASE WHEN card_revision > :revision THEN card_revision ELSE :revision END
WHERE channel_id = :channel_id AND provider = :provider AND job_id = :job_id;

-- name: progress_follows
-- The follows of these jobs that are due a progress reply: the step each last showed, when, and its channel's
-- interval in minutes.
SELECT s.job_id, s.channel_id, s.progress_step, s.progress_at, coalesce(c.progress_minutes, 5) AS minutes
FROM subscriptions s LEFT JOIN channel_settings c ON c.channel_id = s.channel_id
WHERE s.provider = :provider AND s.job_id IN (:job_ids)
  AND coalesce(s.card_ts, '') != '' AND coalesce(c.cards, 1) != 0 AND coalesce(c.progress, 1) != 0
  AND (s.progress_at IS NULL OR s.progress_at <= :now - 60 * coalesce(c.progress_minutes, 5));

-- name: progress_read
UPDATE subscriptions SET progress_at = :asked_at, progress_step = :step
WHERE channel_id = :channel_id AND provider = :provider AND job_id = :job_id;

-- name: cards_of_job
-- Every card of a job posted or still to be posted; not one Slack refused or that is known to be gone.
SELECT a.channel_id FROM announcements a
JOIN subscriptions s ON s.channel_id = a.channel_id AND s.provider = a.provider AND s.job_id = a.job_id
WHERE a.provider = :provider AND a.job_id = :job_id AND a.kind = 'card' AND a.state != 'failed'
  AND (s.card_ts IS NULL OR s.card_ts != '');

-- name: job_revision
SELECT revision, status FROM jobs WHERE provider = :provider AND id = :job_id;

-- name: set_job_revision
UPDATE jobs SET revision = :revision WHERE provider = :provider AND id = :job_id;

-- name: moved_from
-- The jobs this one was moved from.
SELECT source_provider, source_job FROM moves WHERE target_provider = :provider AND new_job = :job_id;
