-- The llpf role and database. Run as a superuser, with the password as a psql variable:
--   psql -U postgres -d postgres -v llpf_password='...' -f deploy/postgres/init.sql
-- (init.sh does this in the docker-compose setup). Then create the tables with
--   llpf db upgrade --db postgresql+psycopg://llpf:PASSWORD@HOST:5432/llpf
-- Use a password of letters and digits: a percent-encoded character (%40 for @) in that URL
-- currently makes llpf's schema migration fail.

-- A login role without superuser rights; it owns the database, so Alembic's migrations (run by
-- `llpf db upgrade`, `llpf submit`, `llpf run` and `llpf resume`) can create and alter tables.
CREATE ROLE llpf LOGIN PASSWORD :'llpf_password';

CREATE DATABASE llpf OWNER llpf ENCODING 'UTF8' TEMPLATE template0;

-- PostgreSQL 15+ no longer lets every role create objects in the public schema; the database
-- owner owns it here, so llpf's tables go to public as SQLAlchemy expects.
\connect llpf
ALTER SCHEMA public OWNER TO llpf;
