-- nrf-provd results database, schema version 10: a run's steps, tokens and
-- artifacts as one compressed row (ledger::sqlite::payload), about a
-- seventh of the three tables' size. The rows of the three tables are
-- moved here by the migration's Rust half, which then drops them.
CREATE TABLE run_payloads (
    run_id      INTEGER PRIMARY KEY NOT NULL REFERENCES runs (id),
    -- The encoding (1: zstd of compact JSON against payload-v1.dict).
    format      INTEGER NOT NULL,
    body        BLOB NOT NULL,
    -- What the hand-off's queues ask of a run without reading its body:
    -- it has an identity token (claim), it installed a device certificate
    -- (onboard).
    claimable   INTEGER NOT NULL CHECK (claimable IN (0, 1)),
    onboardable INTEGER NOT NULL CHECK (onboardable IN (0, 1))
);
