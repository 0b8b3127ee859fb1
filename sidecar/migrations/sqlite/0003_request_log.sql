-- The optional detailed request log: the SQLite twin of migrations/postgres/0003_request_log.sql
-- (read its comments). SQLite has no partitions: one plain table, written with batched
-- multi-row INSERTs, and retention is a DELETE of the rows older than
-- TOLLGATE_REQUEST_LOG_RETENTION_DAYS days. SQLite has no timestamp type either:
--   time_ms   INTEGER, Unix milliseconds (PostgreSQL's timestamptz time);
--   user_hash INTEGER, the 64-bit hash with the same bits as a signed integer.
CREATE TABLE api_request_log (
    time_ms    INTEGER NOT NULL CHECK (time_ms >= 0),
    tenant_id  TEXT    NOT NULL,
    endpoint   TEXT    NOT NULL,
    status     INTEGER NOT NULL CHECK (status = 0 OR status BETWEEN 100 AND 599),
    bytes_in   INTEGER NOT NULL CHECK (bytes_in >= 0),
    bytes_out  INTEGER NOT NULL CHECK (bytes_out >= 0),
    latency_ms INTEGER NOT NULL CHECK (latency_ms >= 0),
    user_hash  INTEGER
) STRICT;

CREATE INDEX api_request_log_tenant_time ON api_request_log (tenant_id, time_ms);
-- Retention deletes by time alone.
CREATE INDEX api_request_log_time ON api_request_log (time_ms);
