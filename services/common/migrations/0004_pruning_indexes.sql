-- Pruning (services/common/retention.py) deletes inbox and request-log rows older than the dedupe retention:
-- these indexes find them without scanning the tables.
CREATE INDEX inbox_processed_at ON inbox (processed_at);
CREATE INDEX request_log_created_at ON request_log (created_at);
