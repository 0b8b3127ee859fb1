-- The registry: plans, tenants, API keys, and the change log the filter follows.
--
-- Times are Unix seconds (UTC). api_keys holds only the SHA-256 of a key (lowercase hex) and
-- a short display prefix: the plain key is shown once, at creation, and kept nowhere.
-- Every write appends one row to registry_changes (kind, entity) in the same transaction; its
-- version is the registry version the feed (GET /v1/registry?since=N) counts in.
CREATE TABLE plans (
    name                 text    PRIMARY KEY,
    requests_per_minute  bigint  NOT NULL CHECK (requests_per_minute > 0),
    burst                bigint  CHECK (burst > 0),
    monthly_quota        bigint  CHECK (monthly_quota > 0),
    overage              text    NOT NULL CHECK (overage IN ('block', 'bill')),
    overage_per          bigint  CHECK (overage_per > 0),
    overage_amount       bigint  CHECK (overage_amount >= 0),
    overage_currency     text,
    billing              text    NOT NULL CHECK (billing IN ('none', 'metered', 'fixed')),
    meter_event_name     text    NOT NULL,
    created_at           bigint  NOT NULL,
    updated_at           bigint  NOT NULL
);

CREATE TABLE tenants (
    id                   text    PRIMARY KEY,
    plan                 text    NOT NULL REFERENCES plans (name),
    stripe_customer_id   text,
    billing_anchor_day   integer NOT NULL CHECK (billing_anchor_day BETWEEN 1 AND 28),
    status               text    NOT NULL CHECK (status IN ('active', 'suspended')),
    webhook_url          text,
    webhook_secret       text,
    alert_email          text,
    alert_thresholds     text    NOT NULL DEFAULT '[80,100]',
    -- Quota state, kept by the quota job: the period it was computed for, and whether the
    -- period's requests reached the plan's monthly_quota (plans with overage 'block').
    quota_period_start   bigint  NOT NULL DEFAULT 0,
    quota_exhausted      boolean NOT NULL DEFAULT false,
    created_at           bigint  NOT NULL,
    updated_at           bigint  NOT NULL
);
CREATE INDEX tenants_plan ON tenants (plan);

-- Every plan a tenant had and since when (a period that saw an upgrade is billed by it).
CREATE TABLE tenant_plan_history (
    tenant_id            text    NOT NULL REFERENCES tenants (id),
    plan                 text    NOT NULL,
    changed_at           bigint  NOT NULL
);
CREATE INDEX tenant_plan_history_tenant ON tenant_plan_history (tenant_id, changed_at);

CREATE TABLE api_keys (
    key_id               text    PRIMARY KEY,
    sha256               text    NOT NULL UNIQUE CHECK (length(sha256) = 64),
    prefix               text    NOT NULL,
    tenant_id            text    NOT NULL REFERENCES tenants (id),
    created_at           bigint  NOT NULL,
    expires_at           bigint,
    revoked_at           bigint
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE registry_changes (
    version              bigserial PRIMARY KEY,
    kind                 text    NOT NULL CHECK (kind IN ('plan', 'tenant', 'key')),
    entity               text    NOT NULL,
    changed_at           bigint  NOT NULL
);
