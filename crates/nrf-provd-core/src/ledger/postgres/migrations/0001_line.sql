-- nrf-provd line ledger (PostgreSQL), schema version 1: every station's
-- runs, and the line-wide replay defence and device registry.
-- Applied by the first station that reaches the server; versions are
-- listed in nrf_provd_migrations. Append only: never edit a released one.

-- Every station's runs, as the station recorded them, once each: uid is the
-- run's globally unique id (forwarding twice stores it once). local_id is
-- the run's id in its station's own database.
CREATE TABLE runs (
    uid           uuid PRIMARY KEY,
    station_id    text NOT NULL,
    local_id      bigint NOT NULL,
    port          text NOT NULL,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    outcome       text NOT NULL,
    failed_step   text,
    reason_code   text,
    reason        text,
    verified_by   text,
    device_uuid   uuid,
    imei          text,
    model         text,
    firmware      text,
    firmware_uuid uuid,
    hw_version    text,
    forwarded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_by_station ON runs (station_id, started_at);
CREATE INDEX runs_by_start ON runs (started_at);
CREATE INDEX runs_by_device ON runs (device_uuid, started_at);
CREATE INDEX runs_by_reason ON runs (reason_code);

CREATE TABLE steps (
    run_uid     uuid NOT NULL REFERENCES runs (uid),
    seq         integer NOT NULL,
    name        text NOT NULL,
    started_at  timestamptz NOT NULL,
    duration_us bigint NOT NULL,
    passed      boolean NOT NULL,
    attempts    integer NOT NULL,
    detail      text NOT NULL,
    PRIMARY KEY (run_uid, seq)
);

CREATE TABLE tokens (
    run_uid     uuid NOT NULL REFERENCES runs (uid),
    seq         integer NOT NULL,
    kind        text NOT NULL,
    text        text NOT NULL,
    authentic   boolean NOT NULL,
    checks_json text NOT NULL,
    PRIMARY KEY (run_uid, seq)
);

CREATE TABLE artifacts (
    run_uid uuid NOT NULL REFERENCES runs (uid),
    seq     integer NOT NULL,
    kind    text NOT NULL,
    sec_tag bigint,
    content text NOT NULL,
    PRIMARY KEY (run_uid, seq)
);

-- The replay defence of the whole line: a challenge nonce, key-generation
-- nonce or JWT jti is accepted once, at one station, ever. No reference to
-- runs: in `required` mode a claim is made during its run, before the run
-- is forwarded.
CREATE TABLE claims (
    kind       text NOT NULL,
    value      text NOT NULL,
    run_uid    uuid NOT NULL,
    station_id text NOT NULL,
    port       text NOT NULL,
    claimed_at timestamptz NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX claims_by_run ON claims (run_uid);

-- The device registry: one row per device UUID the line has seen, with
-- where it was first and last, how many runs it had and how many passed.
-- Its pinned identity key, where the `pin` authority is used, is in pins.
CREATE TABLE devices (
    device_uuid         uuid PRIMARY KEY,
    imei                text,
    first_seen          timestamptz NOT NULL,
    first_station       text NOT NULL,
    first_port          text NOT NULL,
    last_seen           timestamptz NOT NULL,
    last_station        text NOT NULL,
    last_port           text NOT NULL,
    last_run_uid        uuid NOT NULL,
    last_outcome        text,
    runs                bigint NOT NULL DEFAULT 0,
    provisioned         bigint NOT NULL DEFAULT 0,
    last_passed_at      timestamptz,
    last_passed_station text,
    last_passed_port    text,
    last_passed_run_uid uuid
);

-- Device identity keys pinned on first sight, line-wide.
CREATE TABLE pins (
    device_uuid uuid PRIMARY KEY,
    public_key  bytea NOT NULL,
    pinned_at   timestamptz NOT NULL,
    station_id  text NOT NULL,
    port        text NOT NULL,
    run_uid     uuid NOT NULL
);

-- Devices in a run right now (`required` mode): one run per device UUID on
-- the whole line. A row outlives a crashed station only until expires_at
-- (the station's run deadline); a station clears its own rows when it
-- starts.
CREATE TABLE live_devices (
    device_uuid uuid PRIMARY KEY,
    run_uid     uuid NOT NULL,
    station_id  text NOT NULL,
    port        text NOT NULL,
    since       timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- Clashes found when runs were forwarded: one row per run concerned (so two
-- per clash), delivered to that run's station, which records it on the run.
-- kind: attest, keygen, jwt_jti (claims), pin, device (the same device at
-- two places at once).
CREATE TABLE conflicts (
    id            bigserial PRIMARY KEY,
    run_uid       uuid NOT NULL,
    station_id    text NOT NULL,
    kind          text NOT NULL,
    value         text NOT NULL,
    other_run_uid uuid NOT NULL,
    other_station text NOT NULL,
    other_port    text NOT NULL,
    other_at      timestamptz NOT NULL,
    found_at      timestamptz NOT NULL DEFAULT now(),
    delivered     boolean NOT NULL DEFAULT false,
    UNIQUE (run_uid, kind, value)
);
CREATE INDEX conflicts_to_deliver ON conflicts (station_id) WHERE NOT delivered;
