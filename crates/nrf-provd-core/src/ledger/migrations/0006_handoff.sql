-- nrf-provd results database, schema version 6: what was handed off to
-- nRF Cloud, per device.
--
-- The queue itself is not stored: it is the devices of committed passed
-- (or collected) runs that have no claimed_at / onboarded_at here yet, so it
-- survives restarts by construction. A request in flight when the process
-- died is sent again; nRF Cloud's "already claimed" counts as claimed.
CREATE TABLE handoff (
    device_uuid   TEXT PRIMARY KEY NOT NULL,
    -- The run whose token or certificate was sent last.
    run_id        INTEGER NOT NULL REFERENCES runs (id),
    claimed_at    TEXT,
    onboarded_at  TEXT,
    -- The onboarding bulk operation that carries (or carried) the device,
    -- and the device's row in it (0-based, as nRF Cloud numbers errors).
    bulk_op_id    TEXT,
    bulk_op_row   INTEGER,
    -- 1 while that operation's outcome for the device is not known: a
    -- restart follows the operation instead of sending the row again.
    onboard_pending INTEGER NOT NULL DEFAULT 0 CHECK (onboard_pending IN (0, 1)),
    -- nRF Cloud's words for the last refusal, and of which step.
    last_error    TEXT,
    error_step    TEXT CHECK (error_step IN ('claim', 'onboard')),
    error_at      TEXT,
    -- Requests that carried the device (claims and onboardings).
    attempts      INTEGER NOT NULL DEFAULT 0,
    updated_at    TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX handoff_by_bulk_op ON handoff (bulk_op_id) WHERE onboard_pending = 1;
