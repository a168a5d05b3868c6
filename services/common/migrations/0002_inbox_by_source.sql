-- CloudEvents make an event unique by source and id: two systems that both number their events from 1 send
-- two events. The inbox is keyed by (consumer, ce_source, ce_id) from now on.
-- Rows written before this migration did not keep their source: they move with ce_source = '' (no event has
-- an empty source: the decoder refuses one), and a claim treats such a row as covering that id from any
-- source, so an event processed before the migration is never processed again after it.
ALTER TABLE inbox ADD COLUMN ce_source text NOT NULL DEFAULT '';
ALTER TABLE inbox DROP CONSTRAINT inbox_pkey;
ALTER TABLE inbox ADD PRIMARY KEY (consumer, ce_source, ce_id);
ALTER TABLE inbox ALTER COLUMN ce_source DROP DEFAULT;
-- The legacy rows' lookup by id alone.
CREATE INDEX inbox_legacy ON inbox (consumer, ce_id) WHERE ce_source = '';
