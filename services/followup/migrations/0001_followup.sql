-- Followup's store: the resolved cases it remembers, the customers' open cases, follow-ups and feedback.
-- Built only from the events followup consumes and the calls it serves; no other service's tables.

-- A resolved case, as followup needs it: whom to contact, how, and where its root cause was.
CREATE TABLE cases (
    case_id           text        PRIMARY KEY,
    customer_id       text        NOT NULL,
    status            text        NOT NULL CHECK (status IN ('resolved', 'reopened')),
    owner_employee_id text        NOT NULL,
    team              text        NOT NULL,
    severity          text,
    outlook           text,
    category          text,
    customer_timezone text        NOT NULL,
    channel           text,
    root_component    text        NOT NULL,
    root_team         text        NOT NULL,
    area_key          text,          -- 'component:<c>' or 'team:<t>': what corrective actions match
    resolution_number integer     NOT NULL,
    resolved_at       timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cases_by_area ON cases (area_key, resolved_at DESC) WHERE area_key IS NOT NULL;
CREATE INDEX cases_by_customer ON cases (customer_id);

-- Cases opened and not yet resolved: while one exists we are failing the customer again.
CREATE TABLE open_cases (
    case_id     text        PRIMARY KEY,
    customer_id text        NOT NULL,
    opened_at   timestamptz NOT NULL
);
CREATE INDEX open_cases_by_customer ON open_cases (customer_id);

CREATE TABLE followups (
    followup_id        text        PRIMARY KEY,
    case_id            text        NOT NULL,
    customer_id        text        NOT NULL,
    kind               text        NOT NULL,
    occasion           text        NOT NULL,  -- 'resolution:<n>' or 'action:<action id>'
    status             text        NOT NULL CHECK (status IN ('pending', 'sent', 'answered', 'cancelled')),
    due_at             timestamptz NOT NULL,
    original_due_at    timestamptz NOT NULL,
    contact            boolean     NOT NULL,  -- counts against quiet hours and the contact cap
    channel            text,
    owner_employee_id  text        NOT NULL,
    customer_timezone  text        NOT NULL,
    severity           text,
    outlook            text,
    message            text        NOT NULL,
    action_id          text        NOT NULL DEFAULT '',
    action_description text        NOT NULL DEFAULT '',
    policy_version     text        NOT NULL,
    scheduled_at       timestamptz NOT NULL,
    sent_at            timestamptz,
    answered_at        timestamptz,
    cancelled_at       timestamptz,
    cancel_reason      text        NOT NULL DEFAULT '',
    -- The business key: one follow-up per case, kind and occasion, however often an event is redelivered.
    CONSTRAINT one_per_case_kind UNIQUE (case_id, kind, occasion)
);
-- The scheduler's claim: only pending rows, by due time (a partial index stays small as rows are sent).
CREATE INDEX followups_pending_due ON followups (due_at) WHERE status = 'pending';
CREATE INDEX followups_by_customer ON followups (customer_id, due_at);
CREATE INDEX followups_by_case ON followups (case_id, due_at);
-- A customer hears about one corrective action once, however many of their cases pointed at the area.
CREATE UNIQUE INDEX one_notice_per_customer ON followups (customer_id, occasion)
    WHERE kind = 'corrective_action_notice';

-- Satisfaction answers; (source, feedback_id) is the publisher's key, so a redelivery is not a second answer.
CREATE TABLE feedback (
    source                  text        NOT NULL,
    feedback_id             text        NOT NULL,
    customer_id             text        NOT NULL,
    case_id                 text        NOT NULL,
    followup_id             text        NOT NULL,
    score                   integer,
    satisfied               boolean,
    comment                 text        NOT NULL,
    received_at             timestamptz NOT NULL,
    recorded_by_employee_id text        NOT NULL,
    reopen_requested        boolean     NOT NULL,
    PRIMARY KEY (source, feedback_id)
);
CREATE INDEX feedback_by_case ON feedback (case_id, received_at);
