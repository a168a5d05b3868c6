-- Intake's store: cases and the failures they cover, what customers received and said, hot-spot counts.
-- Built only from what intake itself accepted and the events it consumes; no other service's tables.

CREATE TABLE cases (
    case_id           text        PRIMARY KEY,
    customer_id       text        NOT NULL,
    reference         text        NOT NULL,
    status            text        NOT NULL CHECK (status IN ('open', 'resolved', 'reopened')),
    category          text        NOT NULL,
    severity          text        NOT NULL,
    outlook           text        NOT NULL,
    owner_employee_id text        NOT NULL,
    owning_team       text        NOT NULL,
    first_failure_at  timestamptz NOT NULL,
    opened_at         timestamptz NOT NULL,
    resolved_at       timestamptz,
    revision          integer     NOT NULL DEFAULT 1,
    classification    bytea       NOT NULL,  -- recovery.events.v1.Classification, after the latest failure
    history           bytea       NOT NULL   -- recovery.events.v1.HistorySummary, after the latest failure
);
CREATE INDEX cases_by_customer ON cases (customer_id, opened_at DESC);
-- The merge rule's lookup: a customer's unresolved cases by order/booking reference.
CREATE INDEX cases_unresolved_by_reference ON cases (customer_id, reference) WHERE status <> 'resolved';

CREATE TABLE failures (
    failure_id      text        PRIMARY KEY,
    case_id         text        NOT NULL REFERENCES cases,
    customer_id     text        NOT NULL,
    source          text        NOT NULL,
    source_event_id text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    report          bytea       NOT NULL   -- recovery.events.v1.FailureReported, as accepted
);
-- The dedupe key: the same (source, source event id) is one failure, whichever path it came by.
CREATE UNIQUE INDEX failures_dedupe ON failures (source, source_event_id) WHERE source_event_id <> '';
CREATE INDEX failures_by_customer ON failures (customer_id, occurred_at DESC);
CREATE INDEX failures_by_case ON failures (case_id, occurred_at, received_at);

-- Compensation authorised per case (the latest authorised offer version), from offer-authorized events.
CREATE TABLE compensations (
    case_id       text        PRIMARY KEY,
    customer_id   text        NOT NULL,
    offer_id      text        NOT NULL,
    offer_version integer     NOT NULL,
    amount_minor  bigint      NOT NULL CHECK (amount_minor >= 0),
    currency      text        NOT NULL,
    authorized_at timestamptz NOT NULL
);
CREATE INDEX compensations_by_customer ON compensations (customer_id, authorized_at);

-- Satisfaction answers, from feedback-received events; (source, feedback_id) is the publisher's key.
CREATE TABLE satisfaction (
    source      text        NOT NULL,
    feedback_id text        NOT NULL,
    customer_id text        NOT NULL,
    case_id     text        NOT NULL,
    score       integer,
    satisfied   boolean,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (source, feedback_id)
);
CREATE INDEX satisfaction_by_customer ON satisfaction (customer_id, received_at DESC);
CREATE INDEX satisfaction_by_case ON satisfaction (case_id, received_at DESC);

-- Failures waiting to be counted for hot spots. Written with the failure (an insert, no shared row to
-- lock on the hot path); the hot-spot loop claims them in batches and adds them to the counts.
CREATE TABLE hotspot_queue (
    failure_id  text        PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    category    text        NOT NULL,
    component   text        NOT NULL,
    release     text        NOT NULL,
    team        text        NOT NULL,
    employee_id text        NOT NULL
);
CREATE INDEX hotspot_queue_order ON hotspot_queue (received_at);

CREATE TABLE hotspot_counts (
    dimension    text        NOT NULL,
    value        text        NOT NULL,
    window_start timestamptz NOT NULL,
    count        bigint      NOT NULL,
    PRIMARY KEY (dimension, value, window_start)
);

-- One row per hot window: the unique key is what makes the event go out once per window.
CREATE TABLE hotspots (
    hotspot_id       text        PRIMARY KEY,
    dimension        text        NOT NULL,
    value            text        NOT NULL,
    window_start     timestamptz NOT NULL,
    window_end       timestamptz NOT NULL,
    count            bigint      NOT NULL,
    baseline_total   bigint      NOT NULL,
    baseline_windows integer     NOT NULL,
    detected_at      timestamptz NOT NULL,
    UNIQUE (dimension, value, window_start)
);
