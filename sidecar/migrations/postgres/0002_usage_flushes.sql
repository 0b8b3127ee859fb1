-- What the usage flush job needs besides api_usage_daily (see tollgate_sidecar::usage::flush).
--
-- usage_flushes: one row per flush id whose staged aggregates were added into the tables below.
-- It is written in the same transaction as those additions, so "this flush id was applied"
-- and "its counts are in" are one fact: a flush interrupted after the commit finds its id
-- here and only cleans up; one interrupted before finds nothing and applies it (once).
CREATE TABLE usage_flushes (
    flush_id   text        PRIMARY KEY,
    flushed_at timestamptz NOT NULL DEFAULT now()
);

-- Distinct active users per tenant and day: a HyperLogLog count of the day's hashed JWT
-- subjects, as of the latest flush. Not additive (the same user in two flushes is one user),
-- so flushes keep the larger of the stored and the new count: the day's HLL only grows.
CREATE TABLE api_active_users_daily (
    tenant_id  text        NOT NULL,
    date       date        NOT NULL,
    users      bigint      NOT NULL DEFAULT 0 CHECK (users >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, date)
);
