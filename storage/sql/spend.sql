-- What runs cost and what a channel may spend (storage/spend.py): token counts of files, a channel's month of jobs
-- (their estimates and costs, kept with each job), and starts held for confirmation or approval. A job of a
-- channel's month: started from there (a job it only follows is another's spend), created (by the provider's
-- clock, else when the channel began following it) within [start, end); of one provider, or (NULL) of any; in OAuth
-- mode, of the current workspace (its jobs: a Slack Connect channel is in several, each with its own budget).

-- name: file_tokens
SELECT * FROM file_tokens WHERE provider = :provider AND file_id = :file_id AND model = :model;

-- name: remember_file_tokens
INSERT INTO file_tokens (provider, file_id, model, billable_per_epoch, examples, counted_at)
VALUES (:provider, :file_id, :model, :billable_per_epoch, :examples, :now) ON CONFLICT DO NOTHING;

-- name: month_jobs
-- The channel's jobs of a month, newest first, each with who started (or followed) it here.
SELECT j.*, s.user_id, s.origin
FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id
WHERE s.channel_id = :channel_id AND s.origin = 'start'
  AND coalesce(j.created_at, s.created_at) >= :start AND coalesce(j.created_at, s.created_at) < :end
  AND (CAST(:workspace AS TEXT) = '' OR EXISTS (SELECT 1 FROM job_owners o
       WHERE o.provider = s.provider AND o.job_id = s.job_id AND o.workspace = :workspace))
  AND (CAST(:provider AS TEXT) IS NULL OR s.provider = :provider)
ORDER BY coalesce(j.created_at, s.created_at) DESC, j.id
LIMIT :limit OFFSET :offset;

-- name: month_totals
-- jobs, estimated (every job's estimate), actual (ended jobs' costs), running (running jobs' estimates), spent
-- (what the budget counts: each ended job's cost, its estimate when no cost is known, and each running job's
-- estimate) and unknown (jobs with neither).
SELECT count(*) AS jobs, sum(j.estimate) AS estimated,
       sum(CASE WHEN j.final = 1 THEN j.cost END) AS actual,
       sum(CASE WHEN j.final = 0 THEN j.estimate END) AS running,
       sum(CASE WHEN j.final = 1 THEN coalesce(j.cost, j.estimate, 0) ELSE coalesce(j.estimate, 0) END) AS spent,
       sum(CASE WHEN j.estimate IS NULL AND (j.final = 0 OR j.cost IS NULL) THEN 1 ELSE 0 END) AS unknown
FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id
WHERE s.channel_id = :channel_id AND s.origin = 'start'
  AND coalesce(j.created_at, s.created_at) >= :start AND coalesce(j.created_at, s.created_at) < :end
  AND (CAST(:workspace AS TEXT) = '' OR EXISTS (SELECT 1 FROM job_owners o
       WHERE o.provider = s.provider AND o.job_id = s.job_id AND o.workspace = :workspace))
  AND (CAST(:provider AS TEXT) IS NULL OR s.provider = :provider);

-- name: committed_jobs
-- What the budget counts of the month's jobs: each ended job's cost (its estimate when none is known), each
-- running job's estimate.
SELECT sum(CASE WHEN j.final = 1 THEN coalesce(j.cost, j.estimate, 0) ELSE coalesce(j.estimate, 0) END)
FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id
WHERE s.channel_id = :channel_id AND s.origin = 'start'
  AND coalesce(j.created_at, s.created_at) >= :start AND coalesce(j.created_at, s.created_at) < :end
  AND (CAST(:workspace AS TEXT) = '' OR EXISTS (SELECT 1 FROM job_owners o
       WHERE o.provider = s.provider AND o.job_id = s.job_id AND o.workspace = :workspace));

-- name: committed_in_flight
-- Starts admitted but not yet recorded as jobs: their estimates, reserved.
SELECT sum(estimate) FROM start_intents
WHERE channel_id = :channel_id AND created_at >= :start AND created_at < :end
  AND (state = 'pending' OR state LIKE 'reconciling:%')
  AND (CAST(:workspace AS TEXT) = '' OR workspace = :workspace);

-- name: hold
INSERT INTO held_starts (id, team_id, channel_id, user_id, provider, command, estimate, reason, created_at,
                         expires_at, state, workspace)
VALUES (:id, :team_id, :channel_id, :user_id, :provider, :command, :estimate, :reason, :now, :expires_at, 'held',
        :workspace);

-- name: held
SELECT * FROM held_starts WHERE id = :id;

-- name: held_for_deciding
-- A held start's row, locked (PostgreSQL) for the one transaction that decides it.
SELECT * FROM held_starts WHERE id = :id{for_update};

-- name: holds_waiting
SELECT count(*) AS n FROM held_starts WHERE state = 'held' AND expires_at > :now;

-- name: expire_hold
UPDATE held_starts SET state = 'expired' WHERE id = :id;

-- name: decide_hold
UPDATE held_starts SET state = :state, decided_by = :user_id, decided_at = :now WHERE id = :id AND state = 'held';

-- name: set_hold_message
UPDATE held_starts SET message_ts = :ts WHERE id = :id;

-- name: prune
DELETE FROM held_starts WHERE created_at < :before;
