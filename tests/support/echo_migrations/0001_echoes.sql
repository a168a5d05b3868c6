CREATE TABLE echoes (ce_id text PRIMARY KEY, value text NOT NULL);
