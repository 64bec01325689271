-- nrf-provd line ledger (PostgreSQL), schema version 3: traceability.
-- The work order, lot, operator, product and fixture each run was recorded
-- under at its station; runs forwarded before have none (NULL).
ALTER TABLE runs ADD COLUMN work_order text;
ALTER TABLE runs ADD COLUMN lot text;
ALTER TABLE runs ADD COLUMN operator text;
ALTER TABLE runs ADD COLUMN product text;
ALTER TABLE runs ADD COLUMN fixture text;
CREATE INDEX runs_by_work_order ON runs (work_order, started_at) WHERE work_order IS NOT NULL;
