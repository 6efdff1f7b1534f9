-- The billing database's two roles, run by an administrator (a superuser, or the database's
-- owner on managed PostgreSQL) on the billing database. Idempotent: run it again to rotate
-- the passwords.
--
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 \
--        -v migrator=billing_migrator -v migrator_password="$MIGRATOR_PASSWORD" \
--        -v app=billing_app -v app_password="$APP_PASSWORD" -f deploy/postgres/roles.sql
--
-- migrator: owns the schema; `billing db upgrade` runs as it, nothing else does.
-- app:      workers (and the CLI's reads) run as it: rows only, never DDL, never superuser.
-- New tables and sequences that migrations create get the app's rights by default privileges,
-- so a new migration needs no new grant.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN', :'migrator')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'migrator') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'app')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') \gexec

ALTER ROLE :"migrator" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'migrator_password';
ALTER ROLE :"app" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';

-- Nobody else may connect or create anything here (PostgreSQL < 15 lets PUBLIC create in public).
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I', current_database(), :'migrator', :'app') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"migrator";
GRANT USAGE ON SCHEMA public TO :"app";

-- What the migrator creates from now on.
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"app";

-- What is there already (a database migrated before the roles existed: see deploy/README.md).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"app";
