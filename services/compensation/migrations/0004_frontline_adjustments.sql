-- The frontline's adjustments applied to a case's facts, each once: a copy of an OfferAdjusted republished under
-- another event id must not add its gesture twice.
CREATE TABLE adjustments (
    adjustment_id text        PRIMARY KEY,
    case_id       text        NOT NULL,
    applied_at    timestamptz NOT NULL
);
