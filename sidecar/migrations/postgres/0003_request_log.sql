-- The optional detailed request log (TOLLGATE_REQUEST_LOG): one row per request the filter
-- reported (usage.request_log), written in batches with COPY by
-- tollgate_sidecar::usage::request_log. Off by default: the table then stays empty.
--
-- Partitioned by day (UTC) on time: the sidecar creates api_request_log_YYYYMMDD for today and
-- the next two days ahead (and for any day in retention a batch needs), and DROPs the partitions
-- of days older than TOLLGATE_REQUEST_LOG_RETENTION_DAYS (never a DELETE). Partitions are made
-- and dropped under an advisory lock, so several sidecars can share one database.
--
-- time is when the request arrived (the filter's Unix milliseconds); tenant_id and endpoint
-- follow api_usage_daily; status is 0 when the stream ended without a response; user_hash is
-- the filter's 64-bit hash of the JWT subject stored with the same bits as a signed bigint
-- (NULL: no subject).
CREATE TABLE api_request_log (
    time       timestamptz NOT NULL,
    tenant_id  text        NOT NULL,
    endpoint   text        NOT NULL,
    status     smallint    NOT NULL CHECK (status = 0 OR status BETWEEN 100 AND 599),
    bytes_in   bigint      NOT NULL CHECK (bytes_in >= 0),
    bytes_out  bigint      NOT NULL CHECK (bytes_out >= 0),
    latency_ms bigint      NOT NULL CHECK (latency_ms >= 0),
    user_hash  bigint
) PARTITION BY RANGE (time);

-- "This tenant's latest requests"; created on every partition.
CREATE INDEX api_request_log_tenant_time ON api_request_log (tenant_id, time);
