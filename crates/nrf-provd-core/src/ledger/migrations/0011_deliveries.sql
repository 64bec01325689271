-- nrf-provd results database: the outbox of the downstream sinks (issue 22).
-- Schema version 11.

-- The sinks this database has delivered to, by name (kind and URL or
-- command). `active` is whether the daemon's config names it now: a run
-- finished while a sink is active owes that sink a delivery.
CREATE TABLE sinks (
    id       INTEGER PRIMARY KEY NOT NULL,
    name     TEXT NOT NULL UNIQUE,
    added_at TEXT NOT NULL,
    active   INTEGER NOT NULL DEFAULT 1
);

-- One row per (sink, run) still owed: written by the trigger below in the
-- transaction that finishes the run (passed, failed, collected, or
-- interrupted when a crash is recovered), deleted when the sink
-- acknowledges it. A row, not a cursor per sink: each run has its own retry
-- state, and a dead letter (dead_at set, last_error the receiver's answer)
-- does not hold back the runs after it.
CREATE TABLE deliveries (
    sink_id         INTEGER NOT NULL REFERENCES sinks (id),
    run_id          INTEGER NOT NULL REFERENCES runs (id),
    queued_at       TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    last_error      TEXT,
    dead_at         TEXT,
    PRIMARY KEY (sink_id, run_id)
) WITHOUT ROWID;

CREATE INDEX deliveries_by_run ON deliveries (run_id);

CREATE TRIGGER deliveries_on_finish AFTER UPDATE OF outcome ON runs
WHEN OLD.outcome = 'in_flight' AND NEW.outcome <> 'in_flight'
BEGIN
    INSERT OR IGNORE INTO deliveries (sink_id, run_id, queued_at)
    SELECT id, NEW.id, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now') FROM sinks WHERE active;
END;
