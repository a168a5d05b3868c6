-- Compensation authorised per authorisation, no longer per case: a split offer is authorised twice (the owner's
-- share at once, the approved remainder later) and a re-quote after an authorisation offers only what is new, so
-- what a customer received on a case is the sum of its authorisations. Each is kept once, under its id.

-- Rows from before held one whole authorisation per case, recorded under no id: offer_id stands in, as it does
-- for events from producers that send none.
ALTER TABLE compensations ADD COLUMN authorization_id text;
UPDATE compensations SET authorization_id = offer_id;
ALTER TABLE compensations ALTER COLUMN authorization_id SET NOT NULL;
ALTER TABLE compensations
    ADD COLUMN part text NOT NULL DEFAULT 'whole' CHECK (part IN ('whole', 'owner_share', 'remainder'));
ALTER TABLE compensations ALTER COLUMN part DROP DEFAULT;

ALTER TABLE compensations DROP CONSTRAINT compensations_pkey;
ALTER TABLE compensations ADD PRIMARY KEY (authorization_id);
-- The history's per-case sums (a case's rows, whichever customer query asks).
CREATE INDEX compensations_by_case ON compensations (case_id);
