-- The contact log of the customer's cases (escalation's contact-recorded), so the frontline sees at the point of
-- contact who already spoke with the customer, how and how it went. The entry is kept as published.
CREATE TABLE customer_contacts (
    contact_id  text        PRIMARY KEY,
    customer_id text        NOT NULL,
    case_id     text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    entry       bytea       NOT NULL  -- recovery.events.v1.Contact
);
CREATE INDEX customer_contacts_by_customer ON customer_contacts (customer_id, occurred_at DESC);
