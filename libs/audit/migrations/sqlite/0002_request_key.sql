-- As in PostgreSQL: one index on (request_id, row_index, decision_id) serves lookups by request
-- and the idempotency of batch jobs (`ON CONFLICT` names it), in place of the request_id index.
DROP INDEX IF EXISTS decisions_request_id;
CREATE UNIQUE INDEX IF NOT EXISTS decisions_request_key ON decisions (request_id, row_index, decision_id);
