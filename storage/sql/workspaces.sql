-- Workspaces in OAuth mode (storage/workspaces.py): Slack's installations and their tokens, the one-time states of
-- installs, each workspace's provider keys (sealed), which workspace a channel and a job belong to.

-- name: issue_state
INSERT INTO oauth_states (state, expires_at) VALUES (:state, :expires_at);

-- name: states_waiting
SELECT count(*) AS n FROM oauth_states WHERE expires_at > :now;

-- name: consume_state
-- Used up whether or not it is still good: a replay finds nothing.
DELETE FROM oauth_states WHERE state = :state AND expires_at > :now;

-- name: save_installation
-- A new installation, or a reinstall replacing the old tokens (and any refresh in flight for them).
INSERT INTO installations (key, enterprise_id, team_id, is_enterprise_install, app_id, bot_user_id, bot_id,
  bot_scopes, bot_token, bot_refresh_token, bot_token_expires_at, installer_user_id, installed_at)
VALUES (:key, :enterprise_id, :team_id, :is_enterprise_install, :app_id, :bot_user_id, :bot_id, :bot_scopes,
  :bot_token, :bot_refresh_token, :bot_token_expires_at, :installer_user_id, :installed_at)
ON CONFLICT (key) DO UPDATE SET enterprise_id = excluded.enterprise_id, team_id = excluded.team_id,
  is_enterprise_install = excluded.is_enterprise_install, app_id = excluded.app_id,
  bot_user_id = excluded.bot_user_id, bot_id = excluded.bot_id, bot_scopes = excluded.bot_scopes,
  bot_token = excluded.bot_token, bot_refresh_token = excluded.bot_refresh_token,
  bot_token_expires_at = excluded.bot_token_expires_at, installer_user_id = excluded.installer_user_id,
  installed_at = excluded.installed_at, refresh_holder = NULL, refresh_until = NULL;

-- name: adopt_jobs
-- A workspace that installs the app (or an org-wide install, for its workspaces) takes the jobs their channels
-- followed before (the same bot on one token).
INSERT INTO job_owners (provider, job_id, workspace, claimed_at)
SELECT DISTINCT provider, job_id, :key, :now FROM subscriptions WHERE team_id IN (:team_ids)
ON CONFLICT DO NOTHING;

-- name: adopt_channels
INSERT INTO channel_workspaces (channel_id, workspace, seen_at)
SELECT DISTINCT channel_id, :key, :now FROM subscriptions WHERE team_id IN (:team_ids) ON CONFLICT DO NOTHING;

-- name: installation
SELECT * FROM installations WHERE key = :key;

-- name: installations
SELECT * FROM installations ORDER BY key;

-- name: claim_refresh
-- One process refreshes a rotating token, while its sealed token is still the one it read; a claim whose holder
-- died runs out.
UPDATE installations SET refresh_holder = :worker, refresh_until = :until
WHERE key = :key AND bot_token = :token AND (refresh_until IS NULL OR refresh_until <= :now);

-- name: refreshed
UPDATE installations SET bot_token = :token, bot_refresh_token = :refresh_token, bot_token_expires_at = :expires_at,
  refresh_holder = NULL, refresh_until = NULL
WHERE key = :key AND refresh_holder = :worker;

-- name: release_refresh
UPDATE installations SET refresh_holder = NULL, refresh_until = NULL WHERE key = :key AND refresh_holder = :worker;

-- name: remove_installation
DELETE FROM installations WHERE key = :key;

-- name: remove_keys
DELETE FROM workspace_keys WHERE workspace = :key;

-- name: set_key
INSERT INTO workspace_keys (workspace, provider, sealed, last4, set_by, set_at)
VALUES (:workspace, :provider, :sealed, :last4, :user_id, :now)
ON CONFLICT (workspace, provider) DO UPDATE SET sealed = excluded.sealed, last4 = excluded.last4,
  set_by = excluded.set_by, set_at = excluded.set_at;

-- name: remove_key
DELETE FROM workspace_keys WHERE workspace = :workspace AND provider = :provider;

-- name: keys
-- What may be shown of a workspace's keys: never the key, only its last four characters.
SELECT provider, last4, set_by, set_at FROM workspace_keys WHERE workspace = :workspace ORDER BY provider;

-- name: keyed
SELECT DISTINCT workspace FROM workspace_keys;

-- name: sealed_keys
SELECT provider, sealed FROM workspace_keys WHERE workspace = :workspace;

-- name: sealed_key
SELECT sealed FROM workspace_keys WHERE workspace = :workspace AND provider = :provider;

-- name: all_sealed_keys
SELECT workspace, provider, sealed FROM workspace_keys;

-- name: reseal_key
UPDATE workspace_keys SET sealed = :sealed WHERE workspace = :workspace AND provider = :provider;

-- name: all_tokens
SELECT key, bot_token, bot_refresh_token FROM installations;

-- name: reseal_tokens
UPDATE installations SET bot_token = :token, bot_refresh_token = :refresh_token WHERE key = :key;

-- name: claim_job
-- The first workspace to start or name a job owns it.
INSERT INTO job_owners (provider, job_id, workspace, claimed_at) VALUES (:provider, :job_id, :workspace, :now)
ON CONFLICT DO NOTHING;

-- name: job_owner
SELECT workspace FROM job_owners WHERE provider = :provider AND job_id = :job_id;

-- name: owners
SELECT job_id, workspace FROM job_owners WHERE provider = :provider AND job_id IN (:job_ids);

-- name: note_channel
-- Written again only when the channel's workspace changed, or once it was last written long enough ago.
INSERT INTO channel_workspaces (channel_id, workspace, seen_at) VALUES (:channel_id, :workspace, :now)
ON CONFLICT (channel_id) DO UPDATE SET workspace = excluded.workspace, seen_at = excluded.seen_at
WHERE channel_workspaces.workspace != excluded.workspace OR channel_workspaces.seen_at < :stale_before;

-- name: workspace_of
SELECT workspace FROM channel_workspaces WHERE channel_id = :channel_id;

-- name: prune
-- Install states that expired unused.
DELETE FROM oauth_states WHERE expires_at <= :now;
