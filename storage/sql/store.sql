-- The store's own (storage/store.py): what the health check writes.

-- name: check_writable
-- One row written and committed: the database takes writes (not read-only, not full).
INSERT INTO health (id, written_at) VALUES (1, :now) ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at;
