-- Corrective actions can name an incident (a cancelled flight, a failed release): a resolved case keeps the
-- disruption it was part of, so every customer of the incident hears what was fixed. Cases before had none.
ALTER TABLE cases ADD COLUMN incident_id text NOT NULL DEFAULT '';
CREATE INDEX cases_incident ON cases (incident_id) WHERE incident_id <> '';
