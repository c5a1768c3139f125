-- Requests seen once (storage/replays.py): Slack triggers (a replayed form), starts in flight (intents, reconciled
-- after a crash) and provider webhook deliveries.

-- name: see_trigger
-- Remember a Slack trigger_id: no row written means it was seen before (the same signed request, replayed).
INSERT INTO seen_triggers (trigger_id, seen_at) VALUES (:trigger_id, :now) ON CONFLICT DO NOTHING;

-- name: record_intent
-- A start written down before the provider is asked.
INSERT INTO start_intents (request_id, provider, team_id, channel_id, user_id, response_url, training_file, model,
                           suffix, created_at, state, job_id, estimate, approved_by, move_id, workspace)
VALUES (:request_id, :provider, :team_id, :channel_id, :user_id, :response_url, :training_file, :model,
        :suffix, :now, 'pending', NULL, :estimate, :approved_by, :move_id, :workspace);

-- name: finish_intent
-- Close a start still open (its response_url, a credential, is forgotten).
UPDATE start_intents SET state = :state, job_id = :job_id, response_url = NULL
WHERE request_id = :request_id AND (state = 'pending' OR state LIKE 'reconciling:%');

-- name: orphaned_intents
SELECT * FROM start_intents WHERE state = 'pending' AND created_at <= :cutoff ORDER BY created_at;

-- name: reconcile_intent
UPDATE start_intents SET state = :state WHERE request_id = :request_id;

-- name: reopen_intent
UPDATE start_intents SET state = 'pending' WHERE request_id = :request_id;

-- name: remember_webhook
-- Remember a webhook delivery: no row written means it was handled before (the provider delivered it again).
INSERT INTO webhook_deliveries (webhook_id, received_at) VALUES (:webhook_id, :now) ON CONFLICT DO NOTHING;

-- name: prune_webhooks
DELETE FROM webhook_deliveries WHERE received_at < :before;

-- name: prune_triggers
DELETE FROM seen_triggers WHERE seen_at < :before;

-- name: prune_intents
-- Closed starts only: a pending or reconciling one is still someone's to finish.
DELETE FROM start_intents WHERE state != 'pending' AND state NOT LIKE 'reconciling:%' AND created_at < :before;
