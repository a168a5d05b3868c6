-- The services' database roles. Run by a database administrator (the database's owner, with CREATEROLE)
-- before any service migrates, on every deployment: it is idempotent and also rotates passwords.
-- `python -m services.common.provision roles --sql roles.sql` sets recovery.<role>_password from the
-- Secrets first (<SERVICE>_DB_OWNER_PASSWORD, <SERVICE>_DB_APP_PASSWORD); a missing one stops it.
--
-- Per service exactly two login roles, neither superuser, CREATEDB, CREATEROLE, REPLICATION nor BYPASSRLS:
--   <service>_owner  owns the schema <service> and runs its migrations (the migration Job);
--   <service>_app    what the running service logs in as: after each migration the owner gives it DML on
--                    its own schema's tables and nothing on any other schema (grants.sql).
-- Both may CREATE in the database only because every service's start-up check runs
-- `CREATE SCHEMA IF NOT EXISTS <service>`, which PostgreSQL permits only to roles that could create it.
DO $roles$
DECLARE
    service   text;
    role_name text;
    secret    text;
BEGIN
    FOREACH service IN ARRAY ARRAY['intake', 'escalation', 'compensation', 'followup'] LOOP
        FOREACH role_name IN ARRAY ARRAY[service || '_owner', service || '_app'] LOOP
            secret := current_setting('recovery.' || role_name || '_password', true);
            IF coalesce(secret, '') = '' THEN
                RAISE EXCEPTION 'no password for role % (set %_DB_%_PASSWORD)',
                    role_name, upper(service), upper(split_part(role_name, '_', 2));
            END IF;
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
                -- CREATE ROLE's defaults: NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS.
                EXECUTE format('CREATE ROLE %I LOGIN', role_name);
            END IF;
            EXECUTE format('ALTER ROLE %I WITH LOGIN PASSWORD %L', role_name, secret);
            EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO %I', current_database(), role_name);
        END LOOP;
    END LOOP;
    -- Nobody else connects to the services' database, and nobody creates objects in its public schema.
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
END
$roles$;
