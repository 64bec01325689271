-- nrf-provd results database, schema version 16: the hand-off to nRF Cloud
-- becomes two sinks of the one outbox (issue 22), `cloud-claim` (id -1)
-- and `cloud-onboard` (id -2). Their queues were derived from the whole
-- history at every read (a GROUP BY over every passed run); they are now
-- `deliveries` rows, written by triggers in the transaction that finishes
-- a run and read by sink id.
--
-- Unlike a configured sink, a hand-off sink is owed a device, not every
-- run: of each device not yet claimed (onboarded), its latest claimable
-- (onboardable) passed run, and its latest such collected run when that
-- is newer (`cloud claim --include-collected`, and onboarding once nRF
-- Cloud vouched for the device, pick it then). A newer run supersedes the
-- device's older row. The rows are owed whether or not `[cloud]` hands
-- off (`cloud claim` by hand may come any time), so `active` stays 0: the
-- general triggers skip them and the page, `/metrics` and STATUS show no
-- hand-off as a stuck sink; `nrf-provd deliveries` shows them when the
-- config has `[cloud]`. What each device was given (claimed, onboarded,
-- a bulk operation still followed, nRF Cloud's last refusal) stays in
-- `handoff` (version 6).
INSERT INTO sinks (id, name, added_at, active) VALUES
    (-1, 'cloud-claim', strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'), 0),
    (-2, 'cloud-onboard', strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'), 0);

-- What an older database's devices are still owed, with the attempts and
-- last refusal the hand-off recorded. A run of a device is owed when no
-- newer run of the device supersedes it: a pass supersedes any older run,
-- a collected run an older collected one.
INSERT INTO deliveries (sink_id, run_id, queued_at, attempts, last_error)
SELECT -1, r.id, COALESCE(r.finished_at, r.started_at), COALESCE(h.attempts, 0),
       CASE WHEN h.error_step = 'claim' THEN h.last_error END
  FROM runs r JOIN run_payloads p ON p.run_id = r.id
  LEFT JOIN handoff h ON h.device_uuid = r.device_uuid
 WHERE r.device_uuid IS NOT NULL AND r.outcome IN ('passed', 'collected') AND p.claimable
   AND h.claimed_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM runs n JOIN run_payloads np ON np.run_id = n.id
                    WHERE n.device_uuid = r.device_uuid AND n.id > r.id AND np.claimable
                      AND +n.outcome IN ('passed', r.outcome));

INSERT INTO deliveries (sink_id, run_id, queued_at, attempts, last_error)
SELECT -2, r.id, COALESCE(r.finished_at, r.started_at), COALESCE(h.attempts, 0),
       CASE WHEN h.error_step = 'onboard' THEN h.last_error END
  FROM runs r JOIN run_payloads p ON p.run_id = r.id
  LEFT JOIN handoff h ON h.device_uuid = r.device_uuid
 WHERE r.device_uuid IS NOT NULL AND r.outcome IN ('passed', 'collected') AND p.onboardable
   AND h.onboarded_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM runs n JOIN run_payloads np ON np.run_id = n.id
                    WHERE n.device_uuid = r.device_uuid AND n.id > r.id AND np.onboardable
                      AND +n.outcome IN ('passed', r.outcome));

-- A finished run's payload is written after its row, in the same
-- transaction: that is when the claimable / onboardable flags are known.
-- (Retention writes a trimmed payload again: the conditions below make
-- that a no-op for a run no longer owed.)
CREATE TRIGGER handoff_owed_on_finish AFTER INSERT ON run_payloads
WHEN NEW.claimable OR NEW.onboardable
BEGIN
    DELETE FROM deliveries WHERE sink_id = -1 AND run_id IN (
        SELECT o.id FROM runs r JOIN runs o ON o.device_uuid = r.device_uuid AND o.id < r.id
         WHERE r.id = NEW.run_id AND NEW.claimable AND r.outcome IN ('passed', 'collected')
           AND (r.outcome = 'passed' OR o.outcome = 'collected'));
    INSERT OR IGNORE INTO deliveries (sink_id, run_id, queued_at)
    SELECT -1, r.id, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now') FROM runs r
     WHERE r.id = NEW.run_id AND NEW.claimable AND r.device_uuid IS NOT NULL
       AND r.outcome IN ('passed', 'collected')
       AND NOT EXISTS (SELECT 1 FROM handoff h
                        WHERE h.device_uuid = r.device_uuid AND h.claimed_at IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM runs n JOIN run_payloads np ON np.run_id = n.id
                        WHERE n.device_uuid = r.device_uuid AND n.id > r.id AND np.claimable
                          AND +n.outcome IN ('passed', r.outcome));

    DELETE FROM deliveries WHERE sink_id = -2 AND run_id IN (
        SELECT o.id FROM runs r JOIN runs o ON o.device_uuid = r.device_uuid AND o.id < r.id
         WHERE r.id = NEW.run_id AND NEW.onboardable AND r.outcome IN ('passed', 'collected')
           AND (r.outcome = 'passed' OR o.outcome = 'collected'));
    INSERT OR IGNORE INTO deliveries (sink_id, run_id, queued_at)
    SELECT -2, r.id, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now') FROM runs r
     WHERE r.id = NEW.run_id AND NEW.onboardable AND r.device_uuid IS NOT NULL
       AND r.outcome IN ('passed', 'collected')
       AND NOT EXISTS (SELECT 1 FROM handoff h
                        WHERE h.device_uuid = r.device_uuid AND h.onboarded_at IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM runs n JOIN run_payloads np ON np.run_id = n.id
                        WHERE n.device_uuid = r.device_uuid AND n.id > r.id AND np.onboardable
                          AND +n.outcome IN ('passed', r.outcome));
END;

-- A line's conflict amends a passed run to failed: it is owed nothing
-- more, and the device's run it had superseded is owed again (the derived
-- queue fell back to it).
CREATE TRIGGER handoff_owed_on_amend AFTER UPDATE OF outcome ON runs
WHEN OLD.outcome IN ('passed', 'collected') AND NEW.outcome NOT IN ('passed', 'collected')
     AND NEW.device_uuid IS NOT NULL
BEGIN
    DELETE FROM deliveries WHERE sink_id IN (-1, -2) AND run_id = NEW.id;
    INSERT OR IGNORE INTO deliveries (sink_id, run_id, queued_at)
    SELECT -1, r.id, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')
      FROM runs r JOIN run_payloads p ON p.run_id = r.id
     WHERE r.device_uuid = NEW.device_uuid AND r.outcome IN ('passed', 'collected') AND p.claimable
       AND NOT EXISTS (SELECT 1 FROM handoff h
                        WHERE h.device_uuid = r.device_uuid AND h.claimed_at IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM runs n JOIN run_payloads np ON np.run_id = n.id
                        WHERE n.device_uuid = r.device_uuid AND n.id > r.id AND np.claimable
                          AND +n.outcome IN ('passed', r.outcome));
    INSERT OR IGNORE INTO deliveries (sink_id, run_id, queued_at)
    SELECT -2, r.id, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')
      FROM runs r JOIN run_payloads p ON p.run_id = r.id
     WHERE r.device_uuid = NEW.device_uuid AND r.outcome IN ('passed', 'collected')
       AND p.onboardable
       AND NOT EXISTS (SELECT 1 FROM handoff h
                        WHERE h.device_uuid = r.device_uuid AND h.onboarded_at IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM runs n JOIN run_payloads np ON np.run_id = n.id
                        WHERE n.device_uuid = r.device_uuid AND n.id > r.id AND np.onboardable
                          AND +n.outcome IN ('passed', r.outcome));
END;
