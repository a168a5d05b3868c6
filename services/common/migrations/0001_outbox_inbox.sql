-- The kit's tables, created in every service's schema before the service's own migrations.

-- Events waiting to be published. A row is written in the same transaction as the state change that
-- caused it; the relay publishes it after commit and sets sent_at. Rows are never skipped: the relay
-- polls for unsent rows rather than following a sequence watermark.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    topic         text        NOT NULL,
    key           bytea,
    value         bytea       NOT NULL,
    header_keys   text[]      NOT NULL,
    header_values bytea[]     NOT NULL,
    ce_id         text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at       timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Records a consumer has processed, by CloudEvents id, written in the transaction of the effect.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    ce_id        text        NOT NULL,
    topic        text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, ce_id)
);

-- Idempotent RPCs: the first response stored per client request id.
CREATE TABLE request_log (
    request_id  text        NOT NULL,
    method      text        NOT NULL,
    fingerprint bytea       NOT NULL,
    response    bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (method, request_id)
);
