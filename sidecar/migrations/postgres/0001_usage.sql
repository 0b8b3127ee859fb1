-- Daily usage per tenant and endpoint: what the flush job moves out of the usage aggregates.
--
-- tenant_id is text (a UUID fits, and so does any external id); endpoint is the filter's
-- endpoint label (a rule/route name or a path template, never raw ids); plan is the tenant's
-- plan when the row was last written. Counters only grow.
--
-- latency_buckets is a fixed-bucket histogram of request durations: element i counts the
-- requests that took at most LATENCY_BUCKET_BOUNDS_MS[i] milliseconds (and more than the
-- bound before it), the last element those slower than every bound. The bounds are
-- tollgate_sidecar::db::LATENCY_BUCKET_BOUNDS_MS (5, 10, 25, 50, 100, 250, 500, 1000, 2500,
-- 5000, 10000 ms: twelve elements); '{}' means none recorded yet. latency_ms_sum over
-- requests is the mean; percentiles come from the histogram.
CREATE TABLE api_usage_daily (
    tenant_id       text        NOT NULL,
    date            date        NOT NULL,
    endpoint        text        NOT NULL,
    plan            text        NOT NULL DEFAULT '',
    requests        bigint      NOT NULL DEFAULT 0 CHECK (requests >= 0),
    bytes_in        bigint      NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    bytes_out       bigint      NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    errors_4xx      bigint      NOT NULL DEFAULT 0 CHECK (errors_4xx >= 0),
    errors_5xx      bigint      NOT NULL DEFAULT 0 CHECK (errors_5xx >= 0),
    latency_ms_sum  bigint      NOT NULL DEFAULT 0 CHECK (latency_ms_sum >= 0),
    latency_buckets bigint[]    NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, date, endpoint)
);

-- "This day, every tenant" (top endpoints, daily totals, billing runs).
CREATE INDEX api_usage_daily_date ON api_usage_daily (date);
