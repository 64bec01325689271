-- nrf-provd results database, schema version 13: a run the line's
-- conflict amends after it finished (reason `conflict`, outcome failed)
-- is owed again to every active sink, so the systems downstream learn that
-- the verdict they had changed. The sinks send it under a key of its own
-- (`<uid>:amended`), which a receiver that dedupes by key does not drop.
-- Still owed from before, it is reset: the amended run goes out once.
CREATE TRIGGER deliveries_on_amend AFTER UPDATE OF reason_code ON runs
WHEN OLD.outcome <> 'in_flight' AND NEW.reason_code IS 'conflict'
     AND OLD.reason_code IS NOT 'conflict'
BEGIN
    INSERT INTO deliveries (sink_id, run_id, queued_at)
    SELECT id, NEW.id, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now') FROM sinks WHERE active
    ON CONFLICT (sink_id, run_id) DO UPDATE
       SET queued_at = excluded.queued_at, attempts = 0, next_attempt_at = NULL,
           last_error = NULL, dead_at = NULL;
END;
