-- 0001_create_users.sql — the users table behind user.v1.UserService.
--
-- Applied once, in file-name order, by the migration runner described in
-- sql/README.md. The file records itself in schema_migrations inside its own
-- transaction, so the runner skips it next time; applied twice by hand, the
-- second run fails on CREATE TABLE users and rolls back, changing nothing.
-- Never edit it after it shipped (write 0002_... instead): the recorded
-- checksum would no longer match. Tried on PostgreSQL 15.

BEGIN;

CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text        PRIMARY KEY,          -- file name without .sql
    checksum    text        NOT NULL,             -- sha256 of the file
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    -- int64 id in the proto; identity instead of serial so the sequence is
    -- owned by the column and cannot be written to by mistake.
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email       text        NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);

-- CreateUser answers ALREADY_EXISTS for a taken address, whatever its case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- ListUsers and StreamUsers page by id (keyset pagination: the page token is
-- the last id seen), which the primary key index already serves; no other
-- index is needed for the API as specified.

-- update_time follows every UPDATE without the handler having to set it.
CREATE FUNCTION users_touch_update_time() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.update_time := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER users_touch_update_time
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_touch_update_time();

INSERT INTO schema_migrations (version, checksum)
VALUES ('0001_create_users', :'checksum');

COMMIT;
