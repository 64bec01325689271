-- nrf-provd results database, schema version 7: pins found by key.
--
-- The `pin` authority refuses a key already pinned for another device UUID
-- (`key_reused`): one identity key never belongs to two devices. Not
-- UNIQUE: a database from before this rule may hold such pairs, and must
-- still open; the rule is checked when a key is pinned.
CREATE INDEX pins_by_key ON pins (public_key);
