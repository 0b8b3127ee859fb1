-- The registry: the SQLite twin of migrations/postgres/0004_registry.sql (read its comments).
-- Booleans are INTEGER 0/1; registry_changes.version is an AUTOINCREMENT rowid, so versions
-- only grow, as PostgreSQL's bigserial.
CREATE TABLE plans (
    name                 TEXT    PRIMARY KEY,
    requests_per_minute  INTEGER NOT NULL CHECK (requests_per_minute > 0),
    burst                INTEGER CHECK (burst > 0),
    monthly_quota        INTEGER CHECK (monthly_quota > 0),
    overage              TEXT    NOT NULL CHECK (overage IN ('block', 'bill')),
    overage_per          INTEGER CHECK (overage_per > 0),
    overage_amount       INTEGER CHECK (overage_amount >= 0),
    overage_currency     TEXT,
    billing              TEXT    NOT NULL CHECK (billing IN ('none', 'metered', 'fixed')),
    meter_event_name     TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
) STRICT;

CREATE TABLE tenants (
    id                   TEXT    PRIMARY KEY,
    plan                 TEXT    NOT NULL REFERENCES plans (name),
    stripe_customer_id   TEXT,
    billing_anchor_day   INTEGER NOT NULL CHECK (billing_anchor_day BETWEEN 1 AND 28),
    status               TEXT    NOT NULL CHECK (status IN ('active', 'suspended')),
    webhook_url          TEXT,
    webhook_secret       TEXT,
    alert_email          TEXT,
    alert_thresholds     TEXT    NOT NULL DEFAULT '[80,100]',
    quota_period_start   INTEGER NOT NULL DEFAULT 0,
    quota_exhausted      INTEGER NOT NULL DEFAULT 0 CHECK (quota_exhausted IN (0, 1)),
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
) STRICT;
CREATE INDEX tenants_plan ON tenants (plan);

CREATE TABLE tenant_plan_history (
    tenant_id            TEXT    NOT NULL REFERENCES tenants (id),
    plan                 TEXT    NOT NULL,
    changed_at           INTEGER NOT NULL
) STRICT;
CREATE INDEX tenant_plan_history_tenant ON tenant_plan_history (tenant_id, changed_at);

CREATE TABLE api_keys (
    key_id               TEXT    PRIMARY KEY,
    sha256               TEXT    NOT NULL UNIQUE CHECK (length(sha256) = 64),
    prefix               TEXT    NOT NULL,
    tenant_id            TEXT    NOT NULL REFERENCES tenants (id),
    created_at           INTEGER NOT NULL,
    expires_at           INTEGER,
    revoked_at           INTEGER
) STRICT;
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE registry_changes (
    version              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind                 TEXT    NOT NULL CHECK (kind IN ('plan', 'tenant', 'key')),
    entity               TEXT    NOT NULL,
    changed_at           INTEGER NOT NULL
) STRICT;
