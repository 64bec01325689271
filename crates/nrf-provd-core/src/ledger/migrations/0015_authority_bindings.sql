-- nrf-provd results database, schema version 15: one store for every
-- identity authority's state (`Ledger::bind`), so that an authority with
-- state needs no table of its own.
--
-- Under each authority a value is bound to a subject (the device UUID) on
-- first sight: the subject must answer with it from then on, and the
-- value never belongs to another subject of the same authority (checked
-- when a value is bound; not UNIQUE: a database from before that rule may
-- hold such pairs, and must still open).
CREATE TABLE authority_bindings (
    authority  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    -- Standard base64 (for a key: its SubjectPublicKeyInfo DER, the trust
    -- file's form), readable in sqlite3.
    value      TEXT NOT NULL,
    bound_at   TEXT NOT NULL,
    station_id TEXT NOT NULL,
    port       TEXT NOT NULL,
    run_uid    TEXT NOT NULL,
    PRIMARY KEY (authority, subject)
) WITHOUT ROWID;
CREATE INDEX authority_bindings_by_value ON authority_bindings (authority, value);

-- The `pin` authority's pins are its bindings.
INSERT INTO authority_bindings (authority, subject, value, bound_at, station_id, port, run_uid)
SELECT 'pin', device_uuid, public_key, pinned_at, station_id, port, run_uid FROM pins;
DROP TABLE pins;

-- What `pins` was, for whoever reads it (the outbox, sqlite3).
CREATE VIEW pins (device_uuid, public_key, pinned_at, station_id, port, run_uid) AS
SELECT subject, value, bound_at, station_id, port, run_uid
FROM authority_bindings WHERE authority = 'pin';
