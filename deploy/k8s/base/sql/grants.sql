-- A service's runtime grants. Run by the service's owner role right after its migrations, on every
-- deployment (`python -m services.common.provision migrate --grants grants.sql`), so tables a new
-- migration adds are granted before the new version starts. The task sets recovery.schema (the service's
-- schema) and recovery.app_role (its runtime role, <service>_app).
DO $grants$
DECLARE
    schema_name text := current_setting('recovery.schema');
    app_role    text := current_setting('recovery.app_role');
BEGIN
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', schema_name);
    -- CREATE on its own schema only because every service's start-up check runs
    -- `CREATE TABLE IF NOT EXISTS schema_migrations`, which PostgreSQL permits only to roles that could
    -- create it. It cannot alter or drop the owner's tables, and it never runs a migration: each pod's
    -- init container waits until the owner has applied them all.
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO %I', schema_name, app_role);
    IF to_regprocedure(format('%I.grant_runtime_role(text, text)', schema_name)) IS NOT NULL THEN
        -- The service defines its own runtime grants (escalation: SELECT and INSERT only on its audit trail).
        EXECUTE format('SELECT %I.grant_runtime_role(%L, %L)', schema_name, schema_name, app_role);
    ELSE
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I', schema_name, app_role);
        EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', schema_name, app_role);
    END IF;
    -- The migration record is the owner's: the runtime role only reads what was applied.
    EXECUTE format('REVOKE ALL ON %I.schema_migrations FROM %I', schema_name, app_role);
    EXECUTE format('GRANT SELECT ON %I.schema_migrations TO %I', schema_name, app_role);
END
$grants$;
