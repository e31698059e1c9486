#!/bin/sh
# The decision audit log's database, on the same server as the registry's: database `audit`,
# owned by its own role `loan_scoring_audit`. The api and the worker get only this role's
# credentials (AUDIT_URL), never the registry's. The role owns the database because the
# services create their table and indexes at connect, and PostgreSQL 15+ lets only the
# database owner create in schema public.
#
# The official postgres image runs the files of /docker-entrypoint-initdb.d once, when it
# initialises an empty data directory, as POSTGRES_USER over the local socket (the server
# listens on no TCP port then, so the healthchecks stay red until this has run). A volume that
# already holds a database never runs it again: k8s/README.md ("Upgrading from earlier
# versions") gives the same commands to run by hand; keep the two equal.
#
# The only copy, as the dashboard's: k8s/components/postgres mounts it from a ConfigMap
# (configMapGenerator), docker-compose.yml bind-mounts this file. Both set
# AUDIT_POSTGRES_PASSWORD on the postgres container; the api's and worker's AUDIT_URL must carry
# the same password.
#
# Executable, so the entrypoint runs it in its own process; a copy without the x bit is sourced
# by the entrypoint's bash instead, hence plain sh and no `set` that would leak into it.

: "${AUDIT_POSTGRES_PASSWORD:?unset or empty: no password for the audit role loan_scoring_audit}"

# The password reaches SQL as a psql variable quoted by psql itself (:'pw'), so any character is
# safe; the quoted heredoc delimiter keeps the shell out of the SQL. PGHOST and PGHOSTADDR are
# cleared as the entrypoint's own psql calls do: the local socket, never TCP.
PGHOST='' PGHOSTADDR='' psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password \
  --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v pw="$AUDIT_POSTGRES_PASSWORD" -v registry_db="$POSTGRES_DB" <<'SQL'
CREATE ROLE loan_scoring_audit LOGIN PASSWORD :'pw';
CREATE DATABASE audit OWNER loan_scoring_audit;
-- PUBLIC may connect to every new database. Only the owners (and superusers) need to: the
-- audit role stays out of the registry's database, other roles out of the audit database.
REVOKE CONNECT, TEMPORARY ON DATABASE audit FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE :"registry_db" FROM PUBLIC;
SQL
