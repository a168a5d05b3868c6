-- One ledger, no double pay. A split offer has two authorisations (the owner's share, then the approved
-- remainder), so the spend ledger is keyed by authorisation, not by offer; each row keeps the lines it granted,
-- so a re-quote can deduct what the case was already given. Offers keep the grants they were computed
-- against and the repeat-reference cases they saw (recomputation), and cases keep their reference.

-- Spend: one row per authorisation. Rows from before the split were one per offer: the offer id stands in.
ALTER TABLE spend ADD COLUMN authorization_id text;
UPDATE spend SET authorization_id = offer_id;
ALTER TABLE spend ALTER COLUMN authorization_id SET NOT NULL;
ALTER TABLE spend DROP CONSTRAINT spend_pkey;
ALTER TABLE spend ADD PRIMARY KEY (authorization_id);
ALTER TABLE spend ADD COLUMN part text NOT NULL DEFAULT 'whole'
    CHECK (part IN ('whole', 'owner_share', 'remainder'));
ALTER TABLE spend ALTER COLUMN part DROP DEFAULT;
-- The granted lines, [{"kind", "cost_kind", "amount_minor"}] in the row's currency. NULL on rows recorded before
-- lines were kept: the authorised offer's own lines stand in for them (see repository.granted_lines).
ALTER TABLE spend ADD COLUMN lines jsonb;
CREATE INDEX spend_by_case ON spend (case_id, authorized_at);

-- The grants each offer was computed against ([{"kind", "cost_kind", "amount_minor", "currency"}]) and the
-- customer's other cases on the same reference it saw compensated: with facts, history and team spend, enough
-- to recompute the offer exactly. Offers from before: nothing granted, no repeat seen (as they were computed).
ALTER TABLE offers ADD COLUMN granted jsonb NOT NULL DEFAULT '[]';
ALTER TABLE offers ADD COLUMN repeat_reference_cases text[] NOT NULL DEFAULT '{}';

-- The order, booking or contract reference of the case (empty when none, and on cases stored before).
ALTER TABLE cases ADD COLUMN reference text NOT NULL DEFAULT '';
CREATE INDEX cases_by_reference ON cases (customer_id, reference) WHERE reference <> '';
