-- nrf-provd results database, schema version 2: a machine-readable reason
-- code next to the human reason.

ALTER TABLE runs ADD COLUMN reason_code TEXT;

-- Version 1 kept "<code>: <words>" in reason. Split it where the prefix is a
-- code of that version (the list is fixed: this migration never changes).
UPDATE runs
   SET reason_code = substr(reason, 1, instr(reason, ':') - 1),
       reason = ltrim(substr(reason, instr(reason, ':') + 1))
 WHERE reason IS NOT NULL
   AND instr(reason, ':') > 1
   AND substr(reason, 1, instr(reason, ':') - 1) IN (
       'timeout', 'error', 'cme', 'cms', 'disconnected', 'overlong', 'malformed',
       'io', 'config', 'decode', 'kind', 'message_type', 'key_trusted',
       'algorithm', 'key_id', 'signature', 'device_uuid', 'nonce', 'sec_tag',
       'digest', 'csr_signature', 'common_name', 'jwt_time', 'jwt_issuer',
       'jti', 'replay', 'ca', 'mismatch', 'missing', 'store', 'interrupted',
       'verify');

-- Version 1 named a run that could not be recorded as failing at a step
-- "record", which is not a step.
UPDATE runs SET failed_step = NULL WHERE failed_step = 'record';

CREATE INDEX runs_by_reason ON runs (reason_code);
