-- nrf-provd results database, schema version 8: traceability.
--
-- What a factory's MES traces a board by: the work order and lot, the
-- operator, the product (part number and revision) and the fixture of the
-- port, as they were when the run began. Runs recorded before have none
-- (NULL).
ALTER TABLE runs ADD COLUMN work_order TEXT;
ALTER TABLE runs ADD COLUMN lot TEXT;
ALTER TABLE runs ADD COLUMN operator TEXT;
ALTER TABLE runs ADD COLUMN product TEXT;
ALTER TABLE runs ADD COLUMN fixture TEXT;
CREATE INDEX runs_by_work_order ON runs (work_order) WHERE work_order IS NOT NULL;

-- Every change of the station-wide values (from the page, `nrf-provd shift
-- set` or the config at start): who made it, when, and each field's value
-- before and after as JSON objects. Never deleted.
CREATE TABLE shift_changes (
    id         INTEGER PRIMARY KEY,
    changed_at TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    old_json   TEXT NOT NULL,
    new_json   TEXT NOT NULL
);
