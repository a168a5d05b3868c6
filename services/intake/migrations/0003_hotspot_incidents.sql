-- Hot spots by incident: a queued failure keeps the disruption it is part of, so the hot-spot loop counts how
-- fast each incident grows. Failures queued before had none.
ALTER TABLE hotspot_queue ADD COLUMN incident_id text NOT NULL DEFAULT '';
