-- Escalation's schema: cases, offers, approvals, authority ledger, SLA clocks, timers and the audit trail.

-- Every change to a case takes the next revision, so WatchCases can follow changes in order.
CREATE SEQUENCE case_revision;

CREATE TABLE cases (
    case_id                  text PRIMARY KEY,
    customer_id              text        NOT NULL,
    state                    text        NOT NULL,
    owner_employee_id        text        NOT NULL DEFAULT '',
    owner_role               text        NOT NULL DEFAULT '',
    team                     text        NOT NULL,
    severity                 text,
    outlook                  text,
    system_detected          boolean     NOT NULL DEFAULT false,
    -- The CaseOpened message (updated by amendments): display facts, kept verbatim.
    facts                    bytea       NOT NULL,
    facts_revision           integer     NOT NULL DEFAULT 1,
    current_offer_id         text        NOT NULL DEFAULT '',
    pending_approval_id      text        NOT NULL DEFAULT '',
    transfer_count           integer     NOT NULL DEFAULT 0,
    transfer_limit_exceeded  boolean     NOT NULL DEFAULT false,
    resolution_count         integer     NOT NULL DEFAULT 0,
    sla_breach_count         integer     NOT NULL DEFAULT 0,
    -- The role the case was raised to for attention after an SLA breach; empty when not raised.
    attention_role           text        NOT NULL DEFAULT '',
    opened_at                timestamptz NOT NULL,
    acknowledged_at          timestamptz,
    resolved_at              timestamptz,
    updated_at               timestamptz NOT NULL,
    revision                 bigint      NOT NULL DEFAULT nextval('case_revision')
);
CREATE INDEX cases_owner ON cases (owner_employee_id) WHERE state <> 'resolved';
CREATE INDEX cases_team_state ON cases (team, state);
CREATE INDEX cases_revision ON cases (revision);

-- Every offer version compensation proposed; the case's current offer is the highest version.
CREATE TABLE offers (
    offer_id          text PRIMARY KEY,
    case_id           text        NOT NULL REFERENCES cases (case_id),
    version           integer     NOT NULL,
    total_minor       bigint      NOT NULL,
    currency          text        NOT NULL,
    needs_review      boolean     NOT NULL,
    budget_exceeded   boolean     NOT NULL,
    status            text        NOT NULL,
    message           bytea       NOT NULL,  -- the OfferProposed as received
    customer_decision text,
    proposed_at       timestamptz NOT NULL,
    UNIQUE (case_id, version)
);

-- One authorisation per offer: the business-key guard behind the inbox.
CREATE TABLE authorizations (
    offer_id          text PRIMARY KEY REFERENCES offers (offer_id),
    case_id           text        NOT NULL,
    tier              text        NOT NULL,
    actor_kind        text        NOT NULL,
    actor_employee_id text        NOT NULL,
    actor_role        text        NOT NULL,
    actor_team        text        NOT NULL,
    authority_employee_id text    NOT NULL,  -- whose limits were used (the delegator for a delegate)
    amount_minor      bigint      NOT NULL,
    currency          text        NOT NULL,
    approval_id       text        NOT NULL DEFAULT '',
    authorized_at     timestamptz NOT NULL
);

CREATE TABLE approvals (
    approval_id        text PRIMARY KEY,
    case_id            text        NOT NULL REFERENCES cases (case_id),
    customer_id        text        NOT NULL,
    offer_id           text        NOT NULL REFERENCES offers (offer_id),
    offer_version      integer     NOT NULL,
    requested_kind     text        NOT NULL,
    requested_employee_id text     NOT NULL,
    requested_role     text        NOT NULL,
    requested_team     text        NOT NULL,
    owner_employee_id  text        NOT NULL,
    approver_role      text        NOT NULL,
    approver_team      text        NOT NULL,
    amount_minor       bigint      NOT NULL,
    currency           text        NOT NULL,
    reasons            text[]      NOT NULL,
    note               text        NOT NULL DEFAULT '',
    decision_due_at    timestamptz NOT NULL,
    escalation_level   integer     NOT NULL DEFAULT 0,
    requested_at       timestamptz NOT NULL,
    status             text        NOT NULL,
    decision           text,
    approved_minor     bigint,
    decision_reason    text,
    decided_kind       text,
    decided_employee_id text,
    decided_role       text,
    decided_team       text,
    decided_at         timestamptz
);
-- At most one approval in progress per case.
CREATE UNIQUE INDEX approvals_one_pending ON approvals (case_id) WHERE status = 'pending';
CREATE INDEX approvals_pending_route ON approvals (approver_role, approver_team, decision_due_at)
    WHERE status = 'pending';

CREATE TABLE delegations (
    delegation_id          text PRIMARY KEY,
    delegator_employee_id  text        NOT NULL,
    delegate_employee_id   text        NOT NULL,
    role                   text        NOT NULL,
    team                   text        NOT NULL,
    starts_at              timestamptz NOT NULL,
    ends_at                timestamptz NOT NULL,
    reason                 text        NOT NULL,
    created_at             timestamptz NOT NULL,
    CHECK (ends_at > starts_at)
);
CREATE INDEX delegations_delegate ON delegations (delegate_employee_id, ends_at);

-- What each authority has authorised per period: the row is locked (FOR UPDATE) while a decision checks
-- and books against it, so two concurrent approvals can never together exceed a period limit.
CREATE TABLE authority_usage (
    employee_id  text   NOT NULL,
    period       text   NOT NULL CHECK (period IN ('day', 'month')),
    period_start date   NOT NULL,
    currency     text   NOT NULL,
    used_minor   bigint NOT NULL DEFAULT 0 CHECK (used_minor >= 0),
    PRIMARY KEY (employee_id, period, period_start, currency)
);

CREATE TABLE sla_clocks (
    case_id      text        NOT NULL REFERENCES cases (case_id),
    clock        text        NOT NULL,
    status       text        NOT NULL,
    budget       interval    NOT NULL,
    started_at   timestamptz NOT NULL,
    deadline_at  timestamptz NOT NULL,
    warn_at      timestamptz NOT NULL,
    paused_at    timestamptz,
    paused       interval    NOT NULL DEFAULT '0',
    stopped_at   timestamptz,
    PRIMARY KEY (case_id, clock)
);

-- Durable timers: SLA warnings and breaches, approval decision deadlines. Claimed with
-- FOR UPDATE SKIP LOCKED by the scheduler loop; cancelled (not deleted) when the state moves on.
CREATE TABLE timers (
    timer_id     bigserial PRIMARY KEY,
    case_id      text        NOT NULL REFERENCES cases (case_id),
    kind         text        NOT NULL CHECK (kind IN ('warn', 'breach', 'approval_due')),
    clock        text        NOT NULL,
    approval_id  text        NOT NULL DEFAULT '',
    due_at       timestamptz NOT NULL,
    status       text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'fired', 'cancelled')),
    fired_at     timestamptz
);
CREATE INDEX timers_pending_due ON timers (due_at) WHERE status = 'pending';
CREATE INDEX timers_case_pending ON timers (case_id) WHERE status = 'pending';

-- The append-only audit trail: every decision, in the transaction that made it.
CREATE TABLE audit_log (
    entry_id           bigserial PRIMARY KEY,
    case_id            text        NOT NULL,
    action             text        NOT NULL,
    actor_kind         text        NOT NULL,
    actor_employee_id  text        NOT NULL,
    actor_role         text        NOT NULL,
    actor_team         text        NOT NULL,
    amount_minor       bigint,
    currency           text,
    limits             jsonb,      -- the authority's limits in force (AuthorityLimits as JSON)
    policy_version     text        NOT NULL,
    reason             text        NOT NULL DEFAULT '',
    detail             text        NOT NULL DEFAULT '',
    offer_id           text        NOT NULL DEFAULT '',
    approval_id        text        NOT NULL DEFAULT '',
    from_state         text,
    to_state           text,
    occurred_at        timestamptz NOT NULL
);
CREATE INDEX audit_log_case ON audit_log (case_id, entry_id);

-- Nobody but its owner (the migration role) is granted anything on the audit table by default, and the
-- runtime role is meant to get SELECT and INSERT only. Even a role granted more cannot change history:
-- the triggers refuse UPDATE, DELETE and TRUNCATE for everyone.
REVOKE ALL ON audit_log FROM PUBLIC;

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

-- The grants of the service's runtime role (deployments run SELECT grant_runtime_role('<schema>', '<role>')
-- as the schema owner after migrating): everything it needs, and on the audit trail only SELECT and INSERT.
CREATE FUNCTION grant_runtime_role(schema_name text, role_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I', schema_name, role_name);
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %I.audit_log FROM %I', schema_name, role_name);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', schema_name, role_name);
END;
$$;

-- Events that arrived before the case they are about (topics are ordered per partition, not across
-- topics): kept here and applied, in arrival order, when the CaseOpened arrives.
CREATE TABLE early_events (
    id          bigserial PRIMARY KEY,
    case_id     text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('offer', 'amendment')),
    payload     bytea       NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE INDEX early_events_case ON early_events (case_id, id);
