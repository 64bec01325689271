-- Pins found by key: the `pin` authority refuses a key already pinned for
-- another device UUID (`key_reused`), line-wide. Not UNIQUE: a line's
-- ledger from before this rule may hold such pairs and must still migrate;
-- the rule is checked, under an advisory lock on the key, when a key is
-- pinned (and by the forwarder in `deferred` mode).
CREATE INDEX pins_by_key ON pins (public_key);
