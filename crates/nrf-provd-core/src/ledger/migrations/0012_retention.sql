-- nrf-provd results database, schema version 12: retention (issue 23).
-- A compacted run keeps its row (verdict, device, traceability) and its
-- claims forever; its payload (steps, tokens, artifacts) was dropped at
-- compacted_at, once every downstream had it (ledger::sqlite::retention).
ALTER TABLE runs ADD COLUMN compacted_at TEXT;
