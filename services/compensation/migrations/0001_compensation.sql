-- Compensation's store: the case facts offers are computed from, the offer versions, every policy version
-- ever loaded (so an old offer can be recomputed), the recovery's own failures, and the team spend ledger.

-- One row per case (business key: the case id; a duplicate case-opened finds it and proposes nothing).
CREATE TABLE cases (
    case_id           text        PRIMARY KEY,
    customer_id       text        NOT NULL,
    owning_team       text        NOT NULL,
    revision          integer     NOT NULL,            -- intake's revision of the facts (opened = 1)
    failure_at        timestamptz NOT NULL,            -- when the customer's wait began
    opened_at         timestamptz NOT NULL,
    unverified_claims integer     NOT NULL,            -- costs reported without receipt (abuse guard)
    facts             bytea       NOT NULL,            -- recovery.compensation.v1.CaseFacts, latest
    updated_at        timestamptz NOT NULL
);
CREATE INDEX cases_by_customer ON cases (customer_id, opened_at);

-- SLA breaches of the recovery, once per missed deadline (business key), even before the case is known.
CREATE TABLE sla_breaches (
    case_id     text        NOT NULL,
    clock       text        NOT NULL,
    deadline_at timestamptz NOT NULL,
    approval_id text        NOT NULL,
    breached_at timestamptz NOT NULL,
    PRIMARY KEY (case_id, clock, deadline_at, approval_id)
);

-- Reopenings of a case, once per event.
CREATE TABLE reopenings (
    case_id     text        NOT NULL,
    dedupe_key  text        NOT NULL,
    reason      text        NOT NULL,
    reopened_at timestamptz NOT NULL,
    PRIMARY KEY (case_id, dedupe_key)
);

-- Offer versions. Exactly one current (not superseded) offer per case, enforced by the partial index.
CREATE TABLE offers (
    offer_id               text        PRIMARY KEY,
    case_id                text        NOT NULL,
    customer_id            text        NOT NULL,
    version                integer     NOT NULL CHECK (version >= 1),
    policy_version         text        NOT NULL,
    total_minor            bigint      NOT NULL CHECK (total_minor >= 0),
    currency               text        NOT NULL,
    needs_review           boolean     NOT NULL,
    budget_exceeded        boolean     NOT NULL,
    superseded_by_offer_id text,
    proposed_at            timestamptz NOT NULL,
    offer                  bytea       NOT NULL,       -- recovery.compensation.v1.Offer as proposed
    facts                  bytea       NOT NULL,       -- the CaseFacts it was computed from (recomputation)
    team_spent_minor       bigint      NOT NULL,       -- the team's spend it was checked against
    unverified_elsewhere   integer     NOT NULL,       -- the customer's other unverified claims it saw
    UNIQUE (case_id, version)
);
CREATE UNIQUE INDEX offers_one_current ON offers (case_id) WHERE superseded_by_offer_id IS NULL;

-- Every compensation policy version this service has loaded, with its text.
CREATE TABLE policy_versions (
    version   text        PRIMARY KEY,
    sha256    text        NOT NULL,
    text      text        NOT NULL,
    loaded_at timestamptz NOT NULL
);

-- Spend ledger: authorised offers per owning team and month (business key: one row per offer).
CREATE TABLE spend (
    offer_id      text        PRIMARY KEY,
    case_id       text        NOT NULL,
    team          text        NOT NULL,
    period        text        NOT NULL,                -- 'YYYY-MM' of authorized_at, UTC
    currency      text        NOT NULL,
    amount_minor  bigint      NOT NULL CHECK (amount_minor >= 0),
    authorized_at timestamptz NOT NULL
);
CREATE INDEX spend_by_team_period ON spend (team, period, currency);
