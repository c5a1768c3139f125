-- Each channel's settings (storage/channels.py): what it hears, its thresholds and budget, who may raise them. Kept
-- per workspace (storage/scope.py): a workspace sees its own, else what the channel had before OAuth ('').

-- name: settings
SELECT * FROM channel_settings WHERE channel_id = :channel_id AND workspace IN (:workspace, '')
ORDER BY workspace DESC LIMIT 1;

-- name: save_settings
-- A workspace's settings of a channel, whole: written where there were none, replaced where there were.
INSERT INTO channel_settings (workspace, channel_id, outcomes, mentions, cards, progress, progress_minutes,
                              confirm_above, budget, watchdog, updated_by, updated_at)
VALUES (:workspace, :channel_id, :outcomes, :mentions, :cards, :progress, :progress_minutes, :confirm_above,
        :budget, :watchdog, :updated_by, :updated_at)
ON CONFLICT (workspace, channel_id) DO UPDATE SET outcomes = excluded.outcomes, mentions = excluded.mentions,
  cards = excluded.cards, progress = excluded.progress, progress_minutes = excluded.progress_minutes,
  confirm_above = excluded.confirm_above, budget = excluded.budget, watchdog = excluded.watchdog,
  updated_by = excluded.updated_by, updated_at = excluded.updated_at;
