-- Plan B playbooks. A case keeps the incident (disruption) it is part of; a declared incident keeps its playbook,
-- once per incident (business key), so a re-quote of any of its cases, and a case opened after the declaration,
-- are offered the playbook. Offers keep the playbook they are (empty: computed by the normal rules).

-- The case's incident (empty when none, and on cases stored before).
ALTER TABLE cases ADD COLUMN incident_id text NOT NULL DEFAULT '';
CREATE INDEX cases_by_incident ON cases (incident_id) WHERE incident_id <> '';

-- One row per declared incident: the playbook its cases are offered, and who declared it when.
CREATE TABLE incident_playbooks (
    incident_id text        PRIMARY KEY,
    playbook_id text        NOT NULL,
    declared_by text        NOT NULL,
    declared_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL
);

-- The playbook an offer is (empty: computed by the normal rules, and on offers stored before).
ALTER TABLE offers ADD COLUMN playbook_id text NOT NULL DEFAULT '';
