-- Quota alerts: an outbox. The decision that an alert is due (alert_events, at most one per
-- tenant, period, kind and threshold: the UNIQUE key is what makes an alert fire once) and
-- the messages to send for it (alert_deliveries, one per channel) are written in one
-- transaction; the delivery worker sends them and records every attempt (alert_attempts).
--
-- Times are Unix seconds (UTC) but for next_attempt_at and alert_attempts.at (Unix
-- milliseconds: retries can be seconds apart). kind: 'threshold_reached' (threshold = the
-- percentage of the plan's monthly_quota) or 'period_ending' (threshold 0). payload is the
-- webhook body, fixed when the alert was decided: every retry sends the same bytes under the
-- same id (alert_deliveries.id: the webhook-id, or the e-mail's Message-ID).
CREATE TABLE alert_events (
    id               text    PRIMARY KEY,
    tenant_id        text    NOT NULL,
    period_start     bigint  NOT NULL,
    period_end       bigint  NOT NULL,
    kind             text    NOT NULL CHECK (kind IN ('threshold_reached', 'period_ending')),
    threshold        integer NOT NULL CHECK (threshold >= 0),
    used             bigint  NOT NULL,
    quota            bigint  NOT NULL,
    payload          text    NOT NULL,
    created_at       bigint  NOT NULL,
    UNIQUE (tenant_id, period_start, kind, threshold)
);
CREATE INDEX alert_events_period ON alert_events (period_start);

-- status: 'pending' (to send at next_attempt_at), 'delivered', 'failed' (given up: out of
-- retries or refused for good), 'disabled' (the webhook endpoint answered 410, or the tenant
-- no longer has it). A worker claims a due row by moving its next_attempt_at forward (a
-- lease): a worker that dies mid-send leaves it to be retried, under the same id.
CREATE TABLE alert_deliveries (
    id               text    PRIMARY KEY,
    event_id         text    NOT NULL REFERENCES alert_events (id),
    tenant_id        text    NOT NULL,
    channel          text    NOT NULL CHECK (channel IN ('webhook', 'email')),
    target           text    NOT NULL,
    status           text    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'disabled')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  bigint  NOT NULL,
    last_error       text,
    created_at       bigint  NOT NULL,
    updated_at       bigint  NOT NULL,
    UNIQUE (event_id, channel)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (status, next_attempt_at);
CREATE INDEX alert_deliveries_tenant ON alert_deliveries (tenant_id);

-- Every attempt: its HTTP status (webhook) or SMTP reply code (e-mail), or none when no answer
-- came (connection refused, timeout); the error, if any; when, and how long it took.
CREATE TABLE alert_attempts (
    delivery_id      text    NOT NULL REFERENCES alert_deliveries (id),
    attempt          integer NOT NULL,
    at               bigint  NOT NULL,
    status           integer,
    error            text,
    duration_ms      bigint  NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- Webhook endpoints that answered 410 Gone: no more webhooks to that URL for that tenant until
-- its settings are written again (tenants.updated_at after disabled_at).
CREATE TABLE alert_webhooks_disabled (
    tenant_id        text    NOT NULL,
    webhook_url      text    NOT NULL,
    disabled_at      bigint  NOT NULL,
    reason           text    NOT NULL,
    PRIMARY KEY (tenant_id, webhook_url)
);
