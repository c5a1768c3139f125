-- Fine-tunes moved to another provider (storage/moves.py): each move claimed once before its first upload, the
-- files moves uploaded (by content), and the links between a job and where it moved.

-- name: insert_move
-- The unique index on (workspace, source, target) decides between two processes inserting at once.
INSERT INTO moves (id, team_id, channel_id, user_id, source_provider, source_job, target_provider, options, state,
  created_at, updated_at, lease_until)
VALUES (:id, :team_id, :channel_id, :user_id, :source_provider, :source_job, :target_provider, :options, :state,
  :now, :now, :lease_until)
ON CONFLICT DO NOTHING;

-- name: move_of_source
SELECT * FROM moves
WHERE team_id = :team_id AND source_provider = :source_provider AND source_job = :source_job
  AND target_provider = :target_provider{for_update};

-- name: start_to_reconcile
-- A start of this move that a crash interrupted, still to be reconciled (its job may exist).
SELECT 1 FROM start_intents WHERE move_id = :move_id AND (state = 'pending' OR state LIKE 'reconciling:%');

-- name: job_ended_unsuccessfully
SELECT 1 FROM jobs WHERE provider = :provider AND id = :job_id AND state IN ('failed', 'cancelled');

-- name: claim_again
UPDATE moves SET channel_id = :channel_id, user_id = :user_id, options = :options, state = :state, note = NULL,
  new_job = NULL, updated_at = :now, lease_until = :lease_until
WHERE id = :id;

-- name: take
-- Go on with a move waiting in `state`, once, and only in its own workspace.
UPDATE moves SET state = :preparing, updated_at = :now, lease_until = :lease_until
WHERE id = :id AND state = :state AND team_id = :team_id;

-- name: move
SELECT * FROM moves WHERE id = :id;

-- name: set_state
-- A started move keeps its state: its job is linked.
UPDATE moves SET state = :state, note = :note, options = coalesce(:options, options), updated_at = :now
WHERE id = :id AND state != :started;

-- name: settle
UPDATE moves SET state = :refused, note = :note, updated_at = :now WHERE id = :id AND state = :preparing;

-- name: started
-- The move's job is created: linked once.
UPDATE moves SET state = :started, new_job = :new_job, updated_at = :now WHERE id = :id AND new_job IS NULL;

-- name: moved_from
SELECT * FROM moves WHERE target_provider = :provider AND new_job = :job_id;

-- name: moved_to
-- The new jobs a job was moved to, with their last known status, oldest first.
SELECT m.*, j.status AS new_status, j.state AS new_state
FROM moves m LEFT JOIN jobs j ON j.provider = m.target_provider AND j.id = m.new_job
WHERE m.source_provider = :provider AND m.source_job = :job_id AND m.new_job IS NOT NULL
ORDER BY m.created_at;

-- name: uploaded
SELECT file_id FROM moved_files WHERE provider = :provider AND sha256 = :sha256;

-- name: remember_upload
INSERT INTO moved_files (provider, sha256, file_id, uploaded_at) VALUES (:provider, :sha256, :file_id, :now)
ON CONFLICT DO NOTHING;
