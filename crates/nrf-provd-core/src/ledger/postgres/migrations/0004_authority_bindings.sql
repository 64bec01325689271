-- nrf-provd line ledger (PostgreSQL), schema version 4: one store for
-- every identity authority's state (`Ledger::bind`), line-wide, so that an
-- authority with state needs no table of its own.
--
-- Under each authority a value is bound to a subject (the device UUID) on
-- first sight. A value never belongs to two subjects of one authority: not
-- UNIQUE (a line's ledger from before that rule may hold such pairs and
-- must still migrate); checked under an advisory lock on the authority and
-- value when a value is bound (and by the forwarder in `deferred` mode).
CREATE TABLE authority_bindings (
    authority  text NOT NULL,
    subject    uuid NOT NULL,
    value      bytea NOT NULL,
    bound_at   timestamptz NOT NULL,
    station_id text NOT NULL,
    port       text NOT NULL,
    run_uid    uuid NOT NULL,
    PRIMARY KEY (authority, subject)
);
CREATE INDEX authority_bindings_by_value ON authority_bindings (authority, value);

-- The `pin` authority's pins are its bindings.
INSERT INTO authority_bindings (authority, subject, value, bound_at, station_id, port, run_uid)
SELECT 'pin', device_uuid, public_key, pinned_at, station_id, port, run_uid FROM pins;
DROP TABLE pins;

-- What `pins` was, for whoever reads the line's registry.
CREATE VIEW pins (device_uuid, public_key, pinned_at, station_id, port, run_uid) AS
SELECT subject, value, bound_at, station_id, port, run_uid
FROM authority_bindings WHERE authority = 'pin';
