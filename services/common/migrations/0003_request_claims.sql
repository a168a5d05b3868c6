-- An idempotent RPC claims its request id first (the row without a response) and stores the response in the
-- same transaction when the work is done: one statement both takes the id and tells a retry it is one. A
-- concurrent call with the same id waits on the claiming row's transaction instead of on an advisory lock.
-- A committed row always has its response: the claim and the response are written by one transaction.
ALTER TABLE request_log ALTER COLUMN response DROP NOT NULL;
