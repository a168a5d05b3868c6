-- The contact log: every apology, call, message and note on a case, and each colleague's report of the same
-- failure, any number of times; shown in the case and (through contact-recorded) in the customer's history.
CREATE TABLE case_contacts (
    contact_id  text        PRIMARY KEY,
    case_id     text        NOT NULL REFERENCES cases (case_id),
    kind        text        NOT NULL,
    channel     text,
    outcome     text,
    note        text        NOT NULL DEFAULT '',
    employee_id text        NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX case_contacts_case ON case_contacts (case_id, occurred_at);

-- How the customer is written to (from CaseOpened, and amended): the case's progress updates carry it. Cases
-- opened before this migration have none: followup's defaults (zone, channel, fallback language) apply to them.
ALTER TABLE cases
    ADD COLUMN customer_timezone text NOT NULL DEFAULT '',
    ADD COLUMN preferred_channel text,
    ADD COLUMN locale            text NOT NULL DEFAULT '';
