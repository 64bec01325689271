-- nrf-provd results database, schema version 14: the line's shared ledger
-- becomes a sink of the one outbox (issue 22). Its queue, `outbox`
-- (version 5), moves into `deliveries` under a sink of its own, and the
-- table goes.

-- The line: always id 0, named `line`. Unlike a configured sink it is owed
-- every finished run whether or not `[ledger]` names a line, so that a
-- station alone keeps its history for a line it may join later; `active`
-- says only whether it is configured now (shown by `deliveries`, the page
-- and `/metrics`). The daemon sets it at start.
INSERT INTO sinks (id, name, added_at, active)
VALUES (0, 'line', strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'), 0);

-- What the line was still owed, with its attempts and last error: a run a
-- failure had set aside is tried again, as the forwarder's start did.
INSERT INTO deliveries (sink_id, run_id, queued_at, attempts, last_error)
SELECT 0, run_id, queued_at, attempts, last_error FROM outbox;

DROP TRIGGER outbox_on_finish;
DROP TABLE outbox;

DROP TRIGGER deliveries_on_finish;
CREATE TRIGGER deliveries_on_finish AFTER UPDATE OF outcome ON runs
WHEN OLD.outcome = 'in_flight' AND NEW.outcome <> 'in_flight'
BEGIN
    INSERT OR IGNORE INTO deliveries (sink_id, run_id, queued_at)
    SELECT id, NEW.id, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now') FROM sinks
     WHERE active OR id = 0;
END;

-- The line's own conflicts amend a run: the line has the amendment
-- already (its conflicts table), so the run is owed again to the other
-- sinks only.
DROP TRIGGER deliveries_on_amend;
CREATE TRIGGER deliveries_on_amend AFTER UPDATE OF reason_code ON runs
WHEN OLD.outcome <> 'in_flight' AND NEW.reason_code IS 'conflict'
     AND OLD.reason_code IS NOT 'conflict'
BEGIN
    INSERT INTO deliveries (sink_id, run_id, queued_at)
    SELECT id, NEW.id, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now') FROM sinks
     WHERE active AND id <> 0
    ON CONFLICT (sink_id, run_id) DO UPDATE
       SET queued_at = excluded.queued_at, attempts = 0, next_attempt_at = NULL,
           last_error = NULL, dead_at = NULL;
END;
