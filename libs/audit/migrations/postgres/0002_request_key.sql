-- Cheaper writes (each index is work for every decision recorded): one key on
-- (request_id, row_index, decision_id) serves both lookups by request and the idempotency of
-- batch jobs (`<job>:<row>` ids), in place of a primary key on decision_id and a second index
-- on request_id. The ids compare byte-wise (COLLATE "C"): they are ASCII, and a locale-aware
-- comparison is several times slower in every index descent.
ALTER TABLE decisions
    ALTER COLUMN decision_id TYPE TEXT COLLATE "C",
    ALTER COLUMN request_id TYPE TEXT COLLATE "C";
ALTER TABLE decisions DROP CONSTRAINT decisions_pkey;
DROP INDEX IF EXISTS decisions_request_id;
ALTER TABLE decisions ADD PRIMARY KEY (request_id, row_index, decision_id);
