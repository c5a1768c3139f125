-- Each person's App Home (storage/home.py): the jobs they started, what they started this month, where they follow
-- jobs; and whose Home is owed a redraw.

-- name: queue_refresh
-- Owe a redraw to the Home of whoever started this job (in the transaction that records its change).
INSERT INTO home_refreshes (user_id, due_at)
SELECT DISTINCT user_id, :now FROM subscriptions
WHERE provider = :provider AND job_id = :job_id AND origin = 'start' AND user_id IS NOT NULL
ON CONFLICT DO NOTHING;

-- name: started
-- The jobs a person started: running ones first, then the newest; with where each was started and its card there.
SELECT j.*, s.channel_id, s.card_ts
FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id
WHERE s.user_id = :user_id AND s.origin = 'start'
ORDER BY j.final, coalesce(j.created_at, s.created_at) DESC, j.id
LIMIT :limit;

-- name: month
-- The jobs a person started within [start, end) and what they cost: each ended job's cost (its estimate when none
-- is known), each running job's estimate; and how many have neither.
SELECT count(*) AS jobs,
       sum(CASE WHEN j.final = 1 THEN coalesce(j.cost, j.estimate, 0) ELSE coalesce(j.estimate, 0) END) AS spent,
       sum(CASE WHEN j.estimate IS NULL AND (j.final = 0 OR j.cost IS NULL) THEN 1 ELSE 0 END) AS unknown
FROM subscriptions s JOIN jobs j ON j.provider = s.provider AND j.id = s.job_id
WHERE s.user_id = :user_id AND s.origin = 'start'
  AND coalesce(j.created_at, s.created_at) >= :start AND coalesce(j.created_at, s.created_at) < :end;

-- name: channels
-- The channels where a person follows jobs (started or subscribed; not direct messages), the busiest first.
SELECT channel_id, count(*) AS jobs FROM subscriptions
WHERE user_id = :user_id AND channel_id NOT LIKE 'U%' AND channel_id NOT LIKE 'D%'
GROUP BY channel_id ORDER BY count(*) DESC, channel_id
LIMIT :limit;

-- name: any_refresh_due
SELECT 1 FROM home_refreshes WHERE due_at <= :now LIMIT 1;

-- name: claim_refreshes
-- Take the redraws due now off the list (the process that deletes a row is the one that redraws).
DELETE FROM home_refreshes
WHERE user_id IN (SELECT user_id FROM home_refreshes WHERE due_at <= :now ORDER BY due_at LIMIT :limit)
RETURNING user_id;

-- name: refresh_later
INSERT INTO home_refreshes (user_id, due_at) VALUES (:user_id, :at) ON CONFLICT DO NOTHING;

-- name: waiting
SELECT count(*) AS n FROM home_refreshes;
