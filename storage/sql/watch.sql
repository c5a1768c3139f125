-- What the watchdog reads and says of running jobs (storage/watch.py): when each job's metrics were last read, the
-- steps read, and what it has warned of (once per job and kind).

-- name: metrics_due
-- Which of these running jobs a listening channel follows (its watchdog not `off`; a channel that never set it
-- warns) and whose metrics were last read at or before :read_before (or never), longest waiting first.
SELECT j.id, coalesce(j.metrics_read_at, 0) AS read_at FROM jobs j
WHERE j.provider = :provider AND j.id IN (:job_ids) AND j.final = 0 AND coalesce(j.metrics_read_at, 0) <= :read_before
  AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.provider = j.provider AND s.job_id = j.id
              AND coalesce((SELECT c.watchdog FROM channel_settings c WHERE c.channel_id = s.channel_id), 'warn') != 'off')
ORDER BY coalesce(j.metrics_read_at, 0), j.id;

-- name: record_step
-- A step read, kept once.
INSERT INTO job_readings (provider, job_id, step, train_loss, valid_loss, read_at)
VALUES (:provider, :job_id, :step, :train_loss, :valid_loss, :now) ON CONFLICT DO NOTHING;

-- name: mark_read
UPDATE jobs SET metrics_read_at = :now WHERE provider = :provider AND id = :job_id;

-- name: readings
-- A job's newest readings, newest first.
SELECT step, train_loss, valid_loss, read_at FROM job_readings WHERE provider = :provider AND job_id = :job_id
ORDER BY step DESC LIMIT :limit;

-- name: claim_finding
-- A finding, once per job and kind: no row written means it was found before (here or in any process).
INSERT INTO watch_marks (provider, job_id, kind, detail, at) VALUES (:provider, :job_id, :kind, :detail, :now)
ON CONFLICT DO NOTHING;

-- name: unsaid
-- Findings claimed long enough ago and never said: their process stopped between the claim and the warning.
SELECT provider, job_id, kind, detail FROM watch_marks WHERE said_at IS NULL AND at <= :claimed_before ORDER BY at;

-- name: take_over
-- An unsaid finding's claim renewed by this process, if it is still unsaid and old enough.
UPDATE watch_marks SET at = :now
WHERE provider = :provider AND job_id = :job_id AND kind = :kind AND said_at IS NULL AND at <= :claimed_before;

-- name: followers
-- A job's listening followers, each with its channel's watchdog setting.
SELECT s.channel_id, s.user_id, s.origin,
       coalesce((SELECT c.watchdog FROM channel_settings c WHERE c.channel_id = s.channel_id), 'warn') AS watchdog
FROM subscriptions s
WHERE s.provider = :provider AND s.job_id = :job_id
  AND coalesce((SELECT c.watchdog FROM channel_settings c WHERE c.channel_id = s.channel_id), 'warn') != 'off'
ORDER BY s.created_at;

-- name: mark_said
UPDATE watch_marks SET said_at = :now WHERE provider = :provider AND job_id = :job_id AND kind = :kind;

-- name: marks
SELECT kind FROM watch_marks WHERE provider = :provider AND job_id = :job_id ORDER BY at;

-- name: prune
-- An ended job's readings are of no more use.
DELETE FROM job_readings
WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.provider = job_readings.provider AND j.id = job_readings.job_id
              AND j.final = 1);
