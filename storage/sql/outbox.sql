-- The announcement outbox (storage/outbox.py): a post is queued once (its key), claimed by one sender at a time
-- (a lease), and settled as sent, retried, skipped or failed. `{queue_order}` is the order rows were queued in
-- (SQLite's rowid, PostgreSQL's seq); `{skip_locked}` skips a row another process is claiming (PostgreSQL).

-- name: queue_kind
-- One card, card edit, thread reply or warning for the follower in a channel, once by its key.
INSERT INTO announcements (key, provider, job_id, channel_id, outcome, user_id, origin, kind, detail, state,
  created_at, next_attempt_at)
SELECT :key, provider, job_id, channel_id, :outcome, user_id, origin, :kind, :detail, 'pending', :now, :now
FROM subscriptions WHERE provider = :provider AND job_id = :job_id AND channel_id = :channel_id
ON CONFLICT DO NOTHING;

-- name: queue_outcome
-- An outcome's announcement for every channel following the job (or only :channel_id, when not NULL). The key
-- (provider, job, channel, outcome) is the primary key and a key already there is left as it is: that, not the
-- caller's care, is what makes an announcement happen once. A channel that asked for failures only is owed no other.
INSERT INTO announcements (key, provider, job_id, channel_id, outcome, user_id, origin, state, created_at,
  next_attempt_at)
SELECT provider || ':' || job_id || ':' || channel_id || ':' || :outcome, provider, job_id, channel_id, :outcome,
  user_id, origin, 'pending', :now, :now
FROM subscriptions
WHERE provider = :provider AND job_id = :job_id
  AND (CAST(:channel_id AS TEXT) IS NULL OR channel_id = :channel_id)
  AND NOT EXISTS (SELECT 1 FROM channel_settings c WHERE c.channel_id = subscriptions.channel_id
                  AND c.outcomes = 'failures' AND :outcome != 'failed')
ON CONFLICT DO NOTHING;

-- name: older_reply_due
-- When the oldest thread reply of a row's job and channel queued before it falls due, if one is still to be sent.
SELECT min(next_attempt_at) AS at FROM announcements
WHERE provider = :provider AND job_id = :job_id AND channel_id = :channel_id AND kind = 'progress'
  AND state IN ('pending', 'sending')
  AND {queue_order} < (SELECT {queue_order} FROM announcements WHERE key = :key);

-- name: due
-- Rows due now (or whose holder's lease has ended). Of them: outcomes (with the cards their threads need), then
-- other rows, then card edits and thread replies, each in the order queued. An outcome never waits behind a wave of
-- edits or replies, nor behind the cards of other jobs still going up in its channel (a card takes a second).
SELECT * FROM announcements
WHERE (state = 'pending' AND next_attempt_at <= :now) OR (state = 'sending' AND lease_until <= :now)
ORDER BY CASE kind WHEN 'announcement' THEN 0 WHEN 'card_update' THEN 2 WHEN 'progress' THEN 2
  WHEN 'card' THEN CASE WHEN EXISTS (SELECT 1 FROM announcements o WHERE o.kind = 'announcement'
    AND o.state IN ('pending', 'sending') AND o.channel_id = announcements.channel_id
    AND o.provider = announcements.provider AND o.job_id = announcements.job_id) THEN 0 ELSE 1 END
  ELSE 1 END, next_attempt_at, created_at, {queue_order}
LIMIT :limit;

-- name: claim
-- One statement, committed on its own: the row alone is locked, and on PostgreSQL a row another process is
-- claiming this moment is skipped rather than waited for. A claim taken over from a holder whose lease ended is
-- uncertain: that holder may have posted before dying.
UPDATE announcements SET state = 'sending', claimed_by = :worker, lease_until = :until,
  uncertain = CASE WHEN uncertain != 0 OR state = 'sending' THEN 1 ELSE 0 END
WHERE key IN (SELECT key FROM announcements WHERE key = :key
              AND ((state = 'pending' AND next_attempt_at <= :now) OR (state = 'sending' AND lease_until <= :now))
              {skip_locked})
RETURNING *;

-- name: mark_sent
UPDATE announcements SET state = 'sent', sent_at = :now, message_ts = :message_ts, last_error = NULL
WHERE key = :key AND claimed_by = :worker AND state = 'sending';

-- name: mark_retry
-- A real failure (not Slack asking us to wait): counted, and tried again at :at.
UPDATE announcements SET state = 'pending', next_attempt_at = :at, last_error = :error,
  uncertain = CASE WHEN uncertain != 0 OR :uncertain != 0 THEN 1 ELSE 0 END, attempts = attempts + 1
WHERE key = :key AND claimed_by = :worker AND state = 'sending';

-- name: release
-- A claim handed back without counting an attempt: Slack asked us to wait, or we paced.
UPDATE announcements SET state = 'pending', next_attempt_at = :at, last_error = coalesce(:note, last_error)
WHERE key = :key AND claimed_by = :worker AND state = 'sending';

-- name: mark_skipped
UPDATE announcements SET state = 'skipped', last_error = :reason
WHERE key = :key AND claimed_by = :worker AND state = 'sending';

-- name: mark_failed
UPDATE announcements SET state = 'failed', last_error = :reason
WHERE key = :key AND claimed_by = :worker AND state = 'sending';

-- name: announcement
SELECT * FROM announcements WHERE key = :key;

-- name: note_delivery_error
UPDATE subscriptions SET delivery_error = :reason
WHERE channel_id = :channel_id AND provider = :provider AND job_id = :job_id;

-- name: queue_delivery_problem
-- A direct message to whom the failed announcement was for, saying so (through the outbox too).
INSERT INTO announcements (key, provider, job_id, channel_id, outcome, user_id, origin, kind, about_channel,
  last_error, state, created_at, next_attempt_at)
VALUES (:key, :provider, :job_id, :user_id, :outcome, :user_id, :origin, 'delivery_problem', :about_channel,
  :reason, 'pending', :now, :now)
ON CONFLICT DO NOTHING;

-- name: defer_channel
-- Hold a channel's queued rows until :until (every kind, or those of :kinds).
UPDATE announcements SET next_attempt_at = CASE WHEN next_attempt_at > :until THEN next_attempt_at ELSE :until END
WHERE channel_id = :channel_id AND state = 'pending';

-- name: defer_channel_kinds
UPDATE announcements SET next_attempt_at = CASE WHEN next_attempt_at > :until THEN next_attempt_at ELSE :until END
WHERE channel_id = :channel_id AND state = 'pending' AND kind IN (:kinds);

-- name: outcomes_waiting
SELECT 1 FROM announcements
WHERE kind = 'announcement' AND (state = 'sending' OR (state = 'pending' AND next_attempt_at <= :before))
LIMIT 1;

-- name: backlog
SELECT count(*) AS n, min(created_at) AS oldest FROM announcements WHERE state IN ('pending', 'sending');

-- name: next_due
SELECT min(CASE WHEN state = 'pending' THEN next_attempt_at ELSE lease_until END) AS due
FROM announcements WHERE state IN ('pending', 'sending');

-- name: announcements
SELECT * FROM announcements ORDER BY created_at;

-- name: announcements_in_state
SELECT * FROM announcements WHERE state = :state ORDER BY created_at;

-- name: prune
-- An ended job's settled card edits and thread replies: nothing can queue their keys again. Outcomes and cards stay,
-- for their keys are what keeps them once.
DELETE FROM announcements
WHERE kind IN ('card_update', 'progress') AND state IN ('sent', 'skipped', 'failed') AND created_at < :before
  AND EXISTS (SELECT 1 FROM jobs j WHERE j.provider = announcements.provider AND j.id = announcements.job_id
              AND j.final = 1);
