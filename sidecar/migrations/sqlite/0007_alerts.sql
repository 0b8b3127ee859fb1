-- Quota alerts: the SQLite twin of migrations/postgres/0007_alerts.sql (read its comments).
CREATE TABLE alert_events (
    id               TEXT    PRIMARY KEY,
    tenant_id        TEXT    NOT NULL,
    period_start     INTEGER NOT NULL,
    period_end       INTEGER NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('threshold_reached', 'period_ending')),
    threshold        INTEGER NOT NULL CHECK (threshold >= 0),
    used             INTEGER NOT NULL,
    quota            INTEGER NOT NULL,
    payload          TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    UNIQUE (tenant_id, period_start, kind, threshold)
) STRICT;
CREATE INDEX alert_events_period ON alert_events (period_start);

CREATE TABLE alert_deliveries (
    id               TEXT    PRIMARY KEY,
    event_id         TEXT    NOT NULL REFERENCES alert_events (id),
    tenant_id        TEXT    NOT NULL,
    channel          TEXT    NOT NULL CHECK (channel IN ('webhook', 'email')),
    target           TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'disabled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (event_id, channel)
) STRICT;
CREATE INDEX alert_deliveries_due ON alert_deliveries (status, next_attempt_at);
CREATE INDEX alert_deliveries_tenant ON alert_deliveries (tenant_id);

CREATE TABLE alert_attempts (
    delivery_id      TEXT    NOT NULL REFERENCES alert_deliveries (id),
    attempt          INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    status           INTEGER,
    error            TEXT,
    duration_ms      INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
) STRICT;

CREATE TABLE alert_webhooks_disabled (
    tenant_id        TEXT    NOT NULL,
    webhook_url      TEXT    NOT NULL,
    disabled_at      INTEGER NOT NULL,
    reason           TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, webhook_url)
) STRICT;
