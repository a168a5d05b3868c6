-- Money and authority (issue 15): an offer above its owner's limits is split, so it may have two
-- authorisations (the owner's share at once, the approved remainder later); amounts in any configured
-- currency are checked against base-currency limits at a rate recorded on every authorisation and audit row.

-- One row per authorisation. Rows from before the split are whole-offer authorisations: their id is the offer's.
ALTER TABLE authorizations ADD COLUMN authorization_id text;
UPDATE authorizations SET authorization_id = offer_id;
ALTER TABLE authorizations ALTER COLUMN authorization_id SET NOT NULL;
ALTER TABLE authorizations DROP CONSTRAINT authorizations_pkey;
ALTER TABLE authorizations ADD PRIMARY KEY (authorization_id);
ALTER TABLE authorizations
    ADD COLUMN part          text   NOT NULL DEFAULT 'whole' CHECK (part IN ('whole', 'owner_share', 'remainder')),
    ADD COLUMN base_minor    bigint,                        -- the amount as booked against base-currency limits
    ADD COLUMN rate          text   NOT NULL DEFAULT '1',   -- one unit of `currency` in base units
    ADD COLUMN rates_version text   NOT NULL DEFAULT '',
    ADD COLUMN event         bytea;                         -- the OfferAuthorized as published (lines, limits)
-- The business key behind the inbox: each part of an offer is authorised once.
CREATE UNIQUE INDEX authorizations_offer_part ON authorizations (offer_id, part);
CREATE INDEX authorizations_case ON authorizations (case_id);

-- What an approval asks for: the remainder of its offer after the owner's share, line by line.
ALTER TABLE approvals
    ADD COLUMN offer_total_minor bigint,
    ADD COLUMN owner_share_minor bigint NOT NULL DEFAULT 0,
    ADD COLUMN line_minor        bigint[],                  -- remainder per offer line, in the offer's line order
    ADD COLUMN split             text   NOT NULL DEFAULT '';

ALTER TABLE audit_log ADD COLUMN rate jsonb;                -- the ExchangeRate used, as JSON
