-- nrf-provd results database, schema version 9: reads that cost what they
-- return, however long the history (issue 23).

-- results --station and the summary of one station.
CREATE INDEX runs_by_station ON runs (station_id);

-- Runs by station, work order, outcome and reason code, kept by triggers
-- as runs are begun, finished, amended (a conflict) or deleted: the
-- summary (with its yield per work order) and the counts read these few
-- rows, never the runs. '' is none for the work order and the reason code
-- (a primary key column holds no NULL).
CREATE TABLE run_tally (
    station_id  TEXT NOT NULL,
    work_order  TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    runs        INTEGER NOT NULL,
    PRIMARY KEY (station_id, work_order, outcome, reason_code)
) WITHOUT ROWID;

INSERT INTO run_tally (station_id, work_order, outcome, reason_code, runs)
SELECT station_id, COALESCE(work_order, ''), outcome, COALESCE(reason_code, ''), COUNT(*)
  FROM runs GROUP BY station_id, COALESCE(work_order, ''), outcome, COALESCE(reason_code, '');

CREATE TRIGGER run_tally_on_insert AFTER INSERT ON runs
BEGIN
    INSERT INTO run_tally (station_id, work_order, outcome, reason_code, runs)
    VALUES (NEW.station_id, COALESCE(NEW.work_order, ''), NEW.outcome,
            COALESCE(NEW.reason_code, ''), 1)
    ON CONFLICT (station_id, work_order, outcome, reason_code) DO UPDATE SET runs = runs + 1;
END;

CREATE TRIGGER run_tally_on_update
AFTER UPDATE OF station_id, work_order, outcome, reason_code ON runs
WHEN OLD.station_id IS NOT NEW.station_id OR OLD.work_order IS NOT NEW.work_order
     OR OLD.outcome IS NOT NEW.outcome OR OLD.reason_code IS NOT NEW.reason_code
BEGIN
    UPDATE run_tally SET runs = runs - 1
     WHERE station_id = OLD.station_id AND work_order = COALESCE(OLD.work_order, '')
       AND outcome = OLD.outcome AND reason_code = COALESCE(OLD.reason_code, '');
    INSERT INTO run_tally (station_id, work_order, outcome, reason_code, runs)
    VALUES (NEW.station_id, COALESCE(NEW.work_order, ''), NEW.outcome,
            COALESCE(NEW.reason_code, ''), 1)
    ON CONFLICT (station_id, work_order, outcome, reason_code) DO UPDATE SET runs = runs + 1;
END;

CREATE TRIGGER run_tally_on_delete AFTER DELETE ON runs
BEGIN
    UPDATE run_tally SET runs = runs - 1
     WHERE station_id = OLD.station_id AND work_order = COALESCE(OLD.work_order, '')
       AND outcome = OLD.outcome AND reason_code = COALESCE(OLD.reason_code, '');
END;

-- Distinct devices per station and in all ('all', or 'station:<id>'),
-- kept the same way: a device counts once per station it ran at.
-- Keyed by device first: the 'all' count finds a device's other stations
-- by its key, and a run adds one row to one B-tree.
CREATE TABLE station_devices (
    device_uuid TEXT NOT NULL,
    station_id  TEXT NOT NULL,
    PRIMARY KEY (device_uuid, station_id)
) WITHOUT ROWID;

CREATE TABLE device_tally (
    scope   TEXT PRIMARY KEY NOT NULL,
    devices INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO station_devices (station_id, device_uuid)
SELECT DISTINCT station_id, device_uuid FROM runs WHERE device_uuid IS NOT NULL;
INSERT INTO device_tally (scope, devices)
SELECT 'station:' || station_id, COUNT(*) FROM station_devices GROUP BY station_id;
INSERT INTO device_tally (scope, devices)
SELECT 'all', COUNT(DISTINCT device_uuid) FROM station_devices;

-- A device is first seen at a station (a run learns its UUID).
CREATE TRIGGER station_devices_on_insert AFTER INSERT ON runs
WHEN NEW.device_uuid IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO station_devices (station_id, device_uuid)
    VALUES (NEW.station_id, NEW.device_uuid);
END;

CREATE TRIGGER station_devices_on_update AFTER UPDATE OF station_id, device_uuid ON runs
WHEN NEW.device_uuid IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO station_devices (station_id, device_uuid)
    VALUES (NEW.station_id, NEW.device_uuid);
END;

-- INSERT OR IGNORE fires this only for a pair not there yet.
CREATE TRIGGER device_tally_on_insert AFTER INSERT ON station_devices
BEGIN
    INSERT INTO device_tally (scope, devices) VALUES ('station:' || NEW.station_id, 1)
    ON CONFLICT (scope) DO UPDATE SET devices = devices + 1;
    INSERT INTO device_tally (scope, devices)
    SELECT 'all', 1
     WHERE NOT EXISTS (SELECT 1 FROM station_devices
                        WHERE device_uuid = NEW.device_uuid AND station_id <> NEW.station_id)
    ON CONFLICT (scope) DO UPDATE SET devices = devices + 1;
END;
