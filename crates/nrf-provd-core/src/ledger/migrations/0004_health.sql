-- nrf-provd results database, schema version 4: a row the station writes
-- to learn whether the database can take a record again (after a lock,
-- a full disk or an I/O error).
CREATE TABLE health (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at TEXT NOT NULL
);
