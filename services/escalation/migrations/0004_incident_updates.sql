-- The last revision of each incident's cases that an IncidentUpdated was published for: the update loop
-- publishes again only for incidents whose cases changed since.
CREATE TABLE incident_updates (
    incident_id  text        PRIMARY KEY,
    revision     bigint      NOT NULL,
    published_at timestamptz NOT NULL
);
-- The loop reads each incident's newest case revision from the index alone.
CREATE INDEX cases_incident_revision ON cases (incident_id, revision) WHERE incident_id <> '';
