-- Daily usage per tenant and endpoint: the SQLite twin of migrations/postgres/0001_usage.sql
-- (read its comments). SQLite has no date or array type, so:
--   date            TEXT 'YYYY-MM-DD' (sorts and compares like a date);
--   latency_buckets TEXT, a JSON array of integers ('[]': none recorded yet), the same
--                   buckets as PostgreSQL's bigint[] (tollgate_sidecar::db::LATENCY_BUCKET_BOUNDS_MS);
--   updated_at      TEXT, UTC RFC 3339 with milliseconds ('2026-11-26T19:02:16.123Z').
-- STRICT: a value of the wrong type is an error, as in PostgreSQL.
CREATE TABLE api_usage_daily (
    tenant_id       TEXT    NOT NULL,
    date            TEXT    NOT NULL
        CHECK (date GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    endpoint        TEXT    NOT NULL,
    plan            TEXT    NOT NULL DEFAULT '',
    requests        INTEGER NOT NULL DEFAULT 0 CHECK (requests >= 0),
    bytes_in        INTEGER NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    bytes_out       INTEGER NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    errors_4xx      INTEGER NOT NULL DEFAULT 0 CHECK (errors_4xx >= 0),
    errors_5xx      INTEGER NOT NULL DEFAULT 0 CHECK (errors_5xx >= 0),
    latency_ms_sum  INTEGER NOT NULL DEFAULT 0 CHECK (latency_ms_sum >= 0),
    latency_buckets TEXT    NOT NULL DEFAULT '[]'
        CHECK (json_valid(latency_buckets) AND json_type(latency_buckets) = 'array'),
    updated_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (tenant_id, date, endpoint)
) STRICT;

CREATE INDEX api_usage_daily_date ON api_usage_daily (date);
