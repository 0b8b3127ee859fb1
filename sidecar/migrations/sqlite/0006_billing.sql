-- The SQLite twin of migrations/postgres/0006_billing.sql (read its comments).
-- Stripe billing: the meter event outbox, reconciliation results and overage invoices.
--
-- Times are Unix seconds (UTC); dates are 'YYYY-MM-DD' TEXT (UTC days), as the usage day.
--
-- billing_meter_events is the outbox of Stripe meter events: one row per (flush id, tenant,
-- usage day) of a tenant on a plan with billing 'metered', inserted by the usage flush in the
-- SAME transaction as its api_usage_daily upserts (so a flush and its report are one fact),
-- or by reconciliation (kind 'correction'). identifier is deterministic and unique: it is the
-- Stripe meter event identifier AND the Idempotency-Key. event_timestamp is fixed when the
-- row is written (inside the usage day), so a retry sends exactly the same parameters.
-- status: 'pending' (to send), 'no_customer' (waits: the tenant has no stripe_customer_id),
-- 'no_meter' (waits: no meter event name), 'sent' (Stripe accepted it, or said the
-- identifier already exists), 'dead' (Stripe refused it for good; last_error keeps why).
CREATE TABLE billing_meter_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    identifier       TEXT    NOT NULL UNIQUE,
    kind             TEXT    NOT NULL CHECK (kind IN ('usage', 'correction')),
    tenant_id        TEXT    NOT NULL,
    flush_id         TEXT    NOT NULL,
    usage_date       TEXT    NOT NULL,
    event_name       TEXT    NOT NULL,
    value            INTEGER NOT NULL CHECK (value > 0),
    event_timestamp  INTEGER NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('pending', 'no_customer', 'no_meter', 'sent', 'dead')),
    customer_id      TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms  INTEGER NOT NULL DEFAULT 0,
    lease_until_ms   INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER
) STRICT;
CREATE INDEX billing_meter_events_unsent ON billing_meter_events (status, next_attempt_ms)
    WHERE status <> 'sent';
CREATE INDEX billing_meter_events_day ON billing_meter_events (tenant_id, usage_date);

-- One row per (tenant, meter, day) reconciled: what api_usage_daily says, what Stripe's
-- event summaries say, what was done ('matched', 'corrected', 'excess').
CREATE TABLE billing_reconciliations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id        TEXT    NOT NULL,
    event_name       TEXT    NOT NULL,
    usage_date       TEXT    NOT NULL,
    local_value      INTEGER NOT NULL,
    stripe_value     INTEGER NOT NULL,
    outcome          TEXT    NOT NULL CHECK (outcome IN ('matched', 'corrected', 'excess', 'pending')),
    correction       TEXT,
    checked_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX billing_reconciliations_day ON billing_reconciliations (usage_date, tenant_id);

-- Overage invoices: one per (tenant, period), a state machine planned -> invoice_created ->
-- item_added -> finalized ('no_overage': closed, nothing to invoice; 'dead': Stripe refused
-- a step for good, last_error says why); the Stripe ids are kept as soon as Stripe answers.
CREATE TABLE billing_overage_invoices (
    tenant_id        TEXT    NOT NULL,
    period_start     INTEGER NOT NULL,
    period_end       INTEGER NOT NULL,
    customer_id      TEXT    NOT NULL,
    requests         INTEGER NOT NULL,
    included         INTEGER NOT NULL,
    overage          INTEGER NOT NULL,
    amount           INTEGER NOT NULL,
    currency         TEXT    NOT NULL,
    description      TEXT    NOT NULL,
    state            TEXT    NOT NULL
        CHECK (state IN ('planned', 'invoice_created', 'item_added', 'finalized', 'no_overage', 'dead')),
    invoice_id       TEXT,
    item_id          TEXT,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, period_start)
) STRICT;
