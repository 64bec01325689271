-- nrf-provd results database, schema version 5: what a station of a line
-- keeps for the line's shared ledger.

-- Runs finished here and not yet in the shared ledger, oldest first. A run
-- enters in the same transaction that finishes it (the trigger below) and
-- leaves once the shared ledger has committed it. A station without a
-- shared ledger keeps its queue: joined to a line later, it forwards its
-- whole history. attempts and last_error say why a run is still here.
CREATE TABLE outbox (
    run_id     INTEGER PRIMARY KEY NOT NULL REFERENCES runs (id),
    queued_at  TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);

CREATE TRIGGER outbox_on_finish AFTER UPDATE OF outcome ON runs
WHEN OLD.outcome = 'in_flight' AND NEW.outcome <> 'in_flight'
BEGIN
    INSERT OR IGNORE INTO outbox (run_id, queued_at)
    VALUES (NEW.id, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'));
END;

-- Every run already finished is history to forward.
INSERT INTO outbox (run_id, queued_at)
SELECT id, COALESCE(finished_at, started_at) FROM runs WHERE outcome <> 'in_flight';

-- Clashes the shared ledger found after the runs were recorded: a token or
-- pin this station's run shares with another station's run, or the same
-- device running at two places at once. The run itself is amended (failed,
-- reason_code 'conflict'); this row keeps what it said before and whom it
-- clashed with. Never deleted.
CREATE TABLE conflicts (
    run_id            INTEGER NOT NULL REFERENCES runs (id),
    -- attest, keygen, jwt_jti (claims), pin, device
    kind              TEXT NOT NULL,
    value             TEXT NOT NULL,
    other_station     TEXT NOT NULL,
    other_port        TEXT NOT NULL,
    other_run_uid     TEXT NOT NULL,
    other_at          TEXT NOT NULL,
    found_at          TEXT NOT NULL,
    prior_outcome     TEXT NOT NULL,
    prior_failed_step TEXT,
    prior_reason_code TEXT,
    prior_reason      TEXT,
    PRIMARY KEY (run_id, kind, value)
) WITHOUT ROWID;
