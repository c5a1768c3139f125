-- Followed jobs (storage/follows.py): which channel follows which job, and each job's last known state.

-- name: adopt_jobs
-- Rows written before jobs were named by provider go to the provider the bot used then; a row whose provider-named
-- twin exists already stays as it was (SQLite's UPDATE OR IGNORE, portably).
UPDATE jobs SET provider = :provider
WHERE provider = '' AND NOT EXISTS (SELECT 1 FROM jobs t WHERE t.provider = :provider AND t.id = jobs.id);

-- name: adopt_subscriptions
UPDATE subscriptions SET provider = :provider
WHERE provider = '' AND NOT EXISTS (SELECT 1 FROM subscriptions t WHERE t.provider = :provider
                                    AND t.channel_id = subscriptions.channel_id AND t.job_id = subscriptions.job_id);

-- name: adopt_announcements
UPDATE announcements SET provider = :provider, key = :provider || key
WHERE provider = '' AND NOT EXISTS (SELECT 1 FROM announcements t WHERE t.key = :provider || announcements.key);

-- name: adopt_start_intents
UPDATE start_intents SET provider = :provider WHERE provider IS NULL;

-- name: job_known
SELECT 1 FROM jobs WHERE provider = :provider AND id = :job_id;

-- name: insert_job
INSERT INTO jobs (provider, id, status, state, model, fine_tuned_model, trained_tokens, training_file, suffix,
  created_at, finished_at, error_code, error_message, cost, final, observed_at)
VALUES (:provider, :job_id, :status, :state, :model, :fine_tuned_model, :trained_tokens, :training_file, :suffix,
  :created_at, :finished_at, :error_code, :error_message, :cost, :final, :now);

-- name: subscribe
INSERT INTO subscriptions (channel_id, provider, job_id, team_id, user_id, origin, created_at)
VALUES (:channel_id, :provider, :job_id, :team_id, :user_id, :origin, :now)
ON CONFLICT DO NOTHING;

-- name: record_started
-- What the bot itself knows of a job it started: its estimate, who approved it (never overwritten).
UPDATE jobs SET estimate = coalesce(estimate, :estimate), approved_by = coalesce(approved_by, :approved_by)
WHERE provider = :provider AND id = :job_id;

-- name: finish_start_intent
-- The start that made the job, closed in the same transaction as the follow: its reservation of the budget and the
-- job's estimate are never counted both at once.
UPDATE start_intents SET state = 'done', job_id = :job_id, response_url = NULL
WHERE request_id = :request_id AND (state = 'pending' OR state LIKE 'reconciling:%');

-- name: unfollow
DELETE FROM subscriptions WHERE channel_id = :channel_id AND provider = :provider AND job_id = :job_id;

-- name: drop_unsent
-- What a follow was still owed goes with it; a card too (following again gets a new one).
DELETE FROM announcements
WHERE channel_id = :channel_id AND provider = :provider AND job_id = :job_id
  AND (state = 'pending' OR kind IN ('card', 'card_update', 'progress'));

-- name: channel_follows
-- The jobs a channel follows (all, or only those final or not when :final is not NULL), running before finished,
-- newest first, with each job's last known state; in OAuth mode, the current workspace's jobs only.
SELECT s.job_id, s.user_id, s.origin, s.created_at AS followed_at, s.delivery_error, j.*
FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id
WHERE s.channel_id = :channel_id AND (CAST(:final AS BIGINT) IS NULL OR j.final = :final)
  AND (CAST(:workspace AS TEXT) = '' OR EXISTS (SELECT 1 FROM job_owners o
       WHERE o.provider = s.provider AND o.job_id = s.job_id AND o.workspace = :workspace))
ORDER BY j.final, s.created_at DESC, s.job_id
LIMIT :limit OFFSET :offset;

-- name: follow_counts
SELECT sum(CASE WHEN j.final = 0 THEN 1 ELSE 0 END) AS active, sum(CASE WHEN j.final = 1 THEN 1 ELSE 0 END) AS finished
FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id
WHERE s.channel_id = :channel_id
  AND (CAST(:workspace AS TEXT) = '' OR EXISTS (SELECT 1 FROM job_owners o
       WHERE o.provider = s.provider AND o.job_id = s.job_id AND o.workspace = :workspace));

-- name: followers
SELECT * FROM subscriptions WHERE provider = :provider AND job_id = :job_id ORDER BY created_at;

-- name: job
SELECT * FROM jobs WHERE provider = :provider AND id = :job_id;

-- name: dm_follows
SELECT s.job_id, s.user_id, s.origin, s.created_at AS followed_at, s.delivery_error, j.*
FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id
WHERE s.user_id = :user_id AND s.origin = 'dm'
ORDER BY j.final, s.created_at DESC
LIMIT 20;

-- name: job_with_model
SELECT * FROM jobs WHERE fine_tuned_model = :model AND provider != '' ORDER BY observed_at DESC LIMIT 1;

-- name: providers_of
SELECT provider FROM jobs WHERE id = :job_id AND provider != '' ORDER BY observed_at DESC;

-- name: active_jobs
-- Followed jobs not yet final, least recently polled first.
SELECT j.* FROM jobs j
WHERE j.final = 0 AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.provider = j.provider AND s.job_id = j.id)
ORDER BY coalesce(j.polled_at, 0), j.created_at;

-- name: has_active_jobs
SELECT 1 FROM jobs j
WHERE j.final = 0 AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.provider = j.provider AND s.job_id = j.id)
LIMIT 1;

-- name: followed_by_state
SELECT provider, coalesce(state, 'unknown') AS state, count(*) AS n FROM jobs
WHERE final = 0 GROUP BY provider, coalesce(state, 'unknown');

-- name: stored_jobs
SELECT * FROM jobs WHERE provider = :provider AND id IN (:job_ids);

-- name: update_job
-- A job's new state as a poll saw it (every field: those the provider did not mention keep their stored values).
UPDATE jobs SET status = :status, state = :state, model = :model, fine_tuned_model = :fine_tuned_model,
  trained_tokens = :trained_tokens, training_file = :training_file, suffix = :suffix, created_at = :created_at,
  finished_at = :finished_at, error_code = :error_code, error_message = :error_message, cost = :cost,
  final = :final, revision = :revision, observed_at = :now, polled_at = :now
WHERE provider = :provider AND id = :job_id;

-- name: seen_unchanged
UPDATE jobs SET observed_at = :now, polled_at = :now WHERE provider = :provider AND final = 0 AND id IN (:job_ids);

-- name: followed_jobs
-- Every follow of a job at a provider in a state (a meaning: going, succeeded, …), with the job.
SELECT s.channel_id, s.user_id AS follower, j.* FROM subscriptions s
JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id
WHERE j.provider = :provider AND j.state = :state
ORDER BY s.channel_id, j.id;

-- name: mark_polled
UPDATE jobs SET polled_at = :now WHERE provider = :provider AND id IN (:job_ids);
