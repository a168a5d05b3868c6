-- Each team's monthly spend as a running total, so a budget check reads one row instead of summing the team's
-- month of ledger rows (in a mass disruption every case is one team's: O(n) a batch, O(n^2) an incident).
-- The totals are the ledger's sums (missing key: nothing spent). Triggers keep them so on every change to the
-- ledger, in the changing statement: the service's inserts (a duplicate authorisation inserts nothing, so counts
-- nothing), the previous version's, which keeps running while this one migrates, and any correction by hand.

CREATE TABLE spend_totals (
    team         text   NOT NULL,
    period       text   NOT NULL,                      -- 'YYYY-MM', as spend.period
    currency     text   NOT NULL,
    amount_minor bigint NOT NULL,
    PRIMARY KEY (team, period, currency)
);

-- Adds what a statement inserted into the ledger and takes off what it deleted, one upsert per key. Keys in
-- order: two transactions touching the same keys lock them in the same order, never crosswise (no deadlock).
-- The search path is the schema's, so a session with another one (an operator's) still finds the totals.
CREATE FUNCTION spend_totals_apply() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM spend_totals;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO spend_totals AS t (team, period, currency, amount_minor)
        SELECT team, period, currency, sum(amount_minor) FROM added
        GROUP BY team, period, currency ORDER BY team, period, currency
        ON CONFLICT (team, period, currency) DO UPDATE SET amount_minor = t.amount_minor + excluded.amount_minor;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO spend_totals AS t (team, period, currency, amount_minor)
        SELECT team, period, currency, -sum(amount_minor) FROM removed
        GROUP BY team, period, currency ORDER BY team, period, currency
        ON CONFLICT (team, period, currency) DO UPDATE SET amount_minor = t.amount_minor + excluded.amount_minor;
    ELSE  -- UPDATE: the old rows off, the new ones on (a row moved to another key moves its amount)
        INSERT INTO spend_totals AS t (team, period, currency, amount_minor)
        SELECT team, period, currency, sum(amount_minor)
        FROM (SELECT team, period, currency, amount_minor FROM added
              UNION ALL
              SELECT team, period, currency, -amount_minor FROM removed) AS change
        GROUP BY team, period, currency ORDER BY team, period, currency
        ON CONFLICT (team, period, currency) DO UPDATE SET amount_minor = t.amount_minor + excluded.amount_minor;
    END IF;
    RETURN NULL;
END;
$$;

-- The lock first: ledger writers wait from here to the commit, so the totals start from exactly the rows
-- committed before, and every row after goes through the triggers.
LOCK TABLE spend IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER spend_totals_on_insert AFTER INSERT ON spend REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION spend_totals_apply();
CREATE TRIGGER spend_totals_on_update AFTER UPDATE ON spend REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION spend_totals_apply();
CREATE TRIGGER spend_totals_on_delete AFTER DELETE ON spend REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION spend_totals_apply();
CREATE TRIGGER spend_totals_on_truncate AFTER TRUNCATE ON spend
    FOR EACH STATEMENT EXECUTE FUNCTION spend_totals_apply();

INSERT INTO spend_totals (team, period, currency, amount_minor)
SELECT team, period, currency, sum(amount_minor) FROM spend GROUP BY team, period, currency;
