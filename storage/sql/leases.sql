-- The turns every process on the database shares (storage/leases.py): which one runs the poll cycle, the metric
-- reads and the maintenance this interval, and which one posts in a channel now.

-- name: take_turn
-- Take (or keep) a turn: the holder's own, or one whose time has run out. Keeps the later of its two ends.
INSERT INTO leases (name, holder, held_until) VALUES (:name, :worker, :until)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
  held_until = CASE WHEN leases.holder = excluded.holder AND leases.held_until > excluded.held_until
                    THEN leases.held_until ELSE excluded.held_until END
WHERE leases.holder = excluded.holder OR leases.held_until <= :now;

-- name: take_turn_from
-- Take a turn from a holder known to have ended, if it still holds it.
UPDATE leases SET holder = :worker, held_until = :until WHERE name = :name AND holder = :from_holder;

-- name: end_turn
-- Give back a turn still running (its holder is stopping): the next process to ask takes it.
UPDATE leases SET held_until = :now WHERE name = :name AND holder = :worker AND held_until > :now;

-- name: turn_holder
SELECT holder FROM leases WHERE name = :name;

-- name: turns
SELECT * FROM leases ORDER BY name;

-- name: prune
-- Forget turns ended long ago (a worker that stopped for good).
DELETE FROM leases WHERE held_until < :before;
