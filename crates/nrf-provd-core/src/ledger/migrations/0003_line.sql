-- nrf-provd results database, schema version 3: what identity authorities
-- and a line of stations need.
--
-- runs is rebuilt (SQLite cannot change a CHECK constraint in place; the
-- migration runs with foreign keys off and checks them before commit):
-- - uid: the run's globally unique id, the same in every ledger a run is
--   forwarded to;
-- - verified_by: which identity authority vouched for the device;
-- - outcome 'collected': recorded and checked without a key, to be vouched
--   for later (nRF Cloud's two-phase claiming) — never 'passed'.
CREATE TABLE runs_v3 (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    uid           TEXT NOT NULL UNIQUE,
    station_id    TEXT NOT NULL,
    port          TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    outcome       TEXT NOT NULL
                  CHECK (outcome IN ('in_flight', 'passed', 'failed', 'interrupted', 'collected')),
    failed_step   TEXT,
    reason_code   TEXT,
    reason        TEXT,
    verified_by   TEXT,
    device_uuid   TEXT,
    imei          TEXT,
    model         TEXT,
    firmware      TEXT,
    firmware_uuid TEXT,
    hw_version    TEXT
);

-- Before version 3 only the trust file could vouch, so every passed run
-- was vouched for by `keys`. Old runs get random version 4 UUIDs.
INSERT INTO runs_v3 (id, uid, station_id, port, started_at, finished_at, outcome,
                     failed_step, reason_code, reason, verified_by, device_uuid, imei,
                     model, firmware, firmware_uuid, hw_version)
SELECT id,
       lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' ||
           substr(lower(hex(randomblob(2))), 2) || '-' ||
           substr('89ab', 1 + (abs(random()) % 4), 1) ||
           substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6))),
       station_id, port, started_at, finished_at, outcome, failed_step, reason_code, reason,
       CASE WHEN outcome = 'passed' THEN 'keys' END,
       device_uuid, imei, model, firmware, firmware_uuid, hw_version
  FROM runs;

DROP TABLE runs;
ALTER TABLE runs_v3 RENAME TO runs;
CREATE INDEX runs_by_device ON runs (device_uuid);
CREATE INDEX runs_by_start ON runs (started_at);
CREATE INDEX runs_by_outcome ON runs (outcome);
CREATE INDEX runs_by_reason ON runs (reason_code);

-- Device identity keys pinned on first sight (the `pin` authority): from
-- then on the device UUID must answer with this key.
CREATE TABLE pins (
    device_uuid TEXT PRIMARY KEY NOT NULL,
    -- Standard base64 of the SubjectPublicKeyInfo DER (the trust file's form).
    public_key  TEXT NOT NULL,
    pinned_at   TEXT NOT NULL,
    station_id  TEXT NOT NULL,
    port        TEXT NOT NULL,
    run_uid     TEXT NOT NULL
) WITHOUT ROWID;
