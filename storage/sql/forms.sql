-- What a user opened or was shown (storage/forms.py): forms answered once, shared answers claimed once, and how
-- many model calls a person made this minute.

-- name: model_calls_within
-- A person's prompts within the window, oldest first (the first to leave it).
SELECT at, count FROM model_calls WHERE user_id = :user_id AND at > :since ORDER BY at;

-- name: count_model_calls
INSERT INTO model_calls (id, user_id, at, count) VALUES (:id, :user_id, :now, :count);

-- name: keep_answer
INSERT INTO shared_answers (id, user_id, channel_id, message, created_at)
VALUES (:id, :user_id, :channel_id, :message, :now);

-- name: shared_answer
SELECT * FROM shared_answers WHERE id = :id;

-- name: mark_shared
UPDATE shared_answers SET shared_at = :now WHERE id = :id;

-- name: unmark_shared
UPDATE shared_answers SET shared_at = NULL WHERE id = :id;

-- name: record_form
INSERT INTO open_forms (form_id, kind, user_id, team_id, channel_id, provider, job_id, created_at)
VALUES (:form_id, :kind, :user_id, :team_id, :channel_id, :provider, :job_id, :now);

-- name: form
SELECT * FROM open_forms WHERE form_id = :form_id AND kind = :kind;

-- name: mark_submitted
UPDATE open_forms SET submitted_at = :now WHERE form_id = :form_id;

-- name: prune_answers
DELETE FROM shared_answers WHERE created_at < :before;

-- name: prune_forms
DELETE FROM open_forms WHERE created_at < :before;

-- name: prune_model_calls
DELETE FROM model_calls WHERE at < :before;
