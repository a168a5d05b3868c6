-- The reporter is in the loop: an employee whose report merged into a case (another colleague's, or another
-- team's) is recorded on it, may open it, and its owner sees that a colleague heard from the customer.
CREATE TABLE case_reporters (
    case_id     text        NOT NULL REFERENCES cases (case_id),
    employee_id text        NOT NULL,
    failure_id  text        NOT NULL,
    reported_at timestamptz NOT NULL,
    PRIMARY KEY (case_id, employee_id)
);
CREATE INDEX case_reporters_employee ON case_reporters (employee_id);
