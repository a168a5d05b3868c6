-- Incidents (disruptions): a case may be part of one (CaseOpened.incident_id), so the cases of a cancelled
-- flight or a failed release are listed and counted together. Cases opened before had none.
ALTER TABLE cases ADD COLUMN incident_id text NOT NULL DEFAULT '';
CREATE INDEX cases_incident ON cases (incident_id) WHERE incident_id <> '';
