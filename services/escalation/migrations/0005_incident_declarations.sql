-- Plan B: an incident declared with a playbook. The declarer's authority pre-approves the playbook's offer on
-- every case of the incident, within their per-case and per-remedy limits; their monthly limit bounds the
-- incident's total, counted here (base currency) under the row lock every pre-approval takes.
CREATE TABLE incident_declarations (
    incident_id           text        PRIMARY KEY,
    playbook_id           text        NOT NULL,
    declared_by           text        NOT NULL,
    declared_by_role      text        NOT NULL,
    declared_by_team      text        NOT NULL,
    reason                text        NOT NULL,
    limits_policy_version text        NOT NULL,
    declared_at           timestamptz NOT NULL,
    authorized_base_minor bigint      NOT NULL DEFAULT 0 CHECK (authorized_base_minor >= 0)
);
