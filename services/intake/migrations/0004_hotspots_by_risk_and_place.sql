-- Hot spots by risk tag and by location, and hour of day in the customer's local time: a queued failure keeps
-- its risk tags (comma-separated names), the area's location and the customer's time zone. Failures queued
-- before had none (they count by hour in UTC, as they did).
ALTER TABLE hotspot_queue ADD COLUMN risk_tags text NOT NULL DEFAULT '';
ALTER TABLE hotspot_queue ADD COLUMN location text NOT NULL DEFAULT '';
ALTER TABLE hotspot_queue ADD COLUMN customer_timezone text NOT NULL DEFAULT '';
