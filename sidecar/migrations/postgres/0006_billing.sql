-- Stripe billing: the meter event outbox, reconciliation results and overage invoices.
--
-- Times are Unix seconds (UTC), *_ms Unix milliseconds; dates are 'YYYY-MM-DD' text (UTC days), as the usage day.
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
    id               bigserial PRIMARY KEY,
    identifier       text    NOT NULL UNIQUE,
    kind             text    NOT NULL CHECK (kind IN ('usage', 'correction')),
    tenant_id        text    NOT NULL,
    flush_id         text    NOT NULL,
    usage_date       text    NOT NULL,
    event_name       text    NOT NULL,
    value            bigint  NOT NULL CHECK (value > 0),
    event_timestamp  bigint  NOT NULL,
    status           text    NOT NULL
        CHECK (status IN ('pending', 'no_customer', 'no_meter', 'sent', 'dead')),
    customer_id      text,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_ms  bigint  NOT NULL DEFAULT 0,
    lease_until_ms   bigint  NOT NULL DEFAULT 0,
    last_error       text,
    created_at       bigint  NOT NULL,
    sent_at          bigint
);
CREATE INDEX billing_meter_events_unsent ON billing_meter_events (status, next_attempt_ms)
    WHERE status <> 'sent';
CREATE INDEX billing_meter_events_day ON billing_meter_events (tenant_id, usage_date);

-- One row per (tenant, meter, day) reconciled: what api_usage_daily says, what Stripe's
-- event summaries say, what was done ('matched', 'corrected', 'excess').
CREATE TABLE billing_reconciliations (
    id               bigserial PRIMARY KEY,
    tenant_id        text    NOT NULL,
    event_name       text    NOT NULL,
    usage_date       text    NOT NULL,
    local_value      bigint  NOT NULL,
    stripe_value     bigint  NOT NULL,
    outcome          text    NOT NULL CHECK (outcome IN ('matched', 'corrected', 'excess', 'pending')),
    correction       text,
    checked_at       bigint  NOT NULL
);
CREATE INDEX billing_reconciliations_day ON billing_reconciliations (usage_date, tenant_id);

-- Overage invoices: one per (tenant, period), a state machine planned -> invoice_created ->
-- item_added -> finalized ('no_overage': closed, nothing to invoice; 'dead': Stripe refused
-- a step for good, last_error says why); the Stripe ids are kept as soon as Stripe answers.
CREATE TABLE billing_overage_invoices (
    tenant_id        text    NOT NULL,
    period_start     bigint  NOT NULL,
    period_end       bigint  NOT NULL,
    customer_id      text    NOT NULL,
    requests         bigint  NOT NULL,
    included         bigint  NOT NULL,
    overage          bigint  NOT NULL,
    amount           bigint  NOT NULL,
    currency         text    NOT NULL,
    description      text    NOT NULL,
    state            text    NOT NULL
        CHECK (state IN ('planned', 'invoice_created', 'item_added', 'finalized', 'no_overage', 'dead')),
    invoice_id       text,
    item_id          text,
    last_error       text,
    created_at       bigint  NOT NULL,
    updated_at       bigint  NOT NULL,
    PRIMARY KEY (tenant_id, period_start)
);
