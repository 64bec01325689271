-- nrf-provd results database, schema version 1.
-- Times are UTC text "YYYY-MM-DDTHH:MM:SS.ffffffZ" (sortable); UUIDs are
-- lowercase hyphenated text.

-- One row per board insertion. The device columns are what the board said
-- during this run (firmware can change between runs of the same device).
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    station_id    TEXT NOT NULL,
    port          TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    outcome       TEXT NOT NULL
                  CHECK (outcome IN ('in_flight', 'passed', 'failed', 'interrupted')),
    failed_step   TEXT,
    reason        TEXT,
    device_uuid   TEXT,
    imei          TEXT,
    model         TEXT,
    firmware      TEXT,
    firmware_uuid TEXT,
    hw_version    TEXT
);
CREATE INDEX runs_by_device ON runs (device_uuid);
CREATE INDEX runs_by_start ON runs (started_at);
CREATE INDEX runs_by_outcome ON runs (outcome);

CREATE TABLE steps (
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    seq         INTEGER NOT NULL,
    name        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    duration_us INTEGER NOT NULL,
    passed      INTEGER NOT NULL CHECK (passed IN (0, 1)),
    attempts    INTEGER NOT NULL,
    detail      TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

-- Latest known facts per device; the history is in runs.
CREATE TABLE devices (
    device_uuid   TEXT PRIMARY KEY NOT NULL,
    imei          TEXT,
    model         TEXT,
    firmware      TEXT,
    firmware_uuid TEXT,
    hw_version    TEXT,
    first_seen    TEXT NOT NULL,
    last_seen     TEXT NOT NULL,
    last_run      INTEGER NOT NULL REFERENCES runs (id),
    last_outcome  TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE tokens (
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    text        TEXT NOT NULL,
    authentic   INTEGER NOT NULL CHECK (authentic IN (0, 1)),
    checks_json TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

-- Replay defence: a challenge nonce, keygen nonce or JWT jti is accepted once
-- per database, ever.
CREATE TABLE nonces (
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    run_id     INTEGER NOT NULL REFERENCES runs (id),
    claimed_at TEXT NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;

CREATE TABLE artifacts (
    run_id  INTEGER NOT NULL REFERENCES runs (id),
    seq     INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    sec_tag INTEGER,
    content TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
