-- pg_cron STAND-IN: for the Postgres 17 check (local/pg17.ts) ONLY.
--
-- It SCHEDULES NOTHING. There is no background worker: no job ever runs, and
-- cron.job_run_details is only ever written by whoever inserts into it. It exists
-- because the migrations create pg_cron and call cron.schedule(...), and the
-- pgTAP specs read cron.job, while the real pg_cron is a C extension that is not
-- packaged for Postgres 17 here (Debian 12 has it for 15 only; the npm Postgres
-- 17 build ships contrib, not pg_cron). With it the migrations and the specs can
-- be checked on 17; whether jobs really run is checked on the local 15 cluster,
-- which has the real pg_cron and its scheduler.
--
-- What it keeps from the real extension (citusdata/pg_cron: pg_cron.sql and the
-- upgrade scripts up to pg_cron--1.5--1.6.sql, applied in order; the functions'
-- behaviour from src/job_metadata.c):
--   * schema cron; cron.job and cron.job_run_details with pg_cron 1.6's columns,
--     in the same order, with the same defaults, keys, sequences, row level
--     security policies and grants to public, registered for pg_dump;
--   * every SQL-callable function with 1.6's signature: schedule(schedule,
--     command), schedule(job_name, schedule, command) — an upsert by
--     (jobname, username), as pg_cron >= 1.4 does —, schedule_in_database,
--     unschedule(job_id), unschedule(job_name), alter_job; the same error
--     messages, the same checks of the schedule (see cron._valid_schedule), the
--     same owner checks.
-- What differs, on purpose:
--   * the functions are PL/pgSQL. The C functions write cron.job as the
--     extension's owner (SetUserIdAndSecContext); here they are SECURITY DEFINER,
--     and the caller pg_cron records as the job's username (GetUserId()) is taken
--     from the role GUC (SET ROLE), else the session user. So a job scheduled from
--     inside another role's SECURITY DEFINER function is recorded for the caller
--     of that function, not for its owner. Nothing in this project does that.
--   * no job cache: cron.job_cache_invalidate() is a no-op trigger.
-- Supabase's grants to postgres (its pg_cron after-create script) are made by
-- sql/supabase_platform.sql after `create extension`, as for the real pg_cron.

\echo Use "CREATE EXTENSION pg_cron" to load this file. \quit

-- pg_cron.sql: jobs can only be scheduled from the database the scheduler reads.
DO $$
BEGIN
   IF pg_catalog.current_database() OPERATOR(pg_catalog.<>) COALESCE(pg_catalog.current_setting('cron.database_name', true), 'postgres')
      AND pg_catalog.current_database() OPERATOR(pg_catalog.<>) 'contrib_regression' THEN
      RAISE EXCEPTION 'can only create extension in database %',
                      COALESCE(pg_catalog.current_setting('cron.database_name', true), 'postgres')
      USING DETAIL = 'Jobs must be scheduled from the database configured in 'OPERATOR(pg_catalog.||)
                     'cron.database_name, since the pg_cron background worker 'OPERATOR(pg_catalog.||)
                     'reads job descriptions from this database.',
            HINT = pg_catalog.format('Add cron.database_name = ''%s'' in postgresql.conf 'OPERATOR(pg_catalog.||)
                          'to use the current database.', pg_catalog.current_database());
   END IF;
END;
$$;

-- Tables: pg_cron.sql, then 1.0--1.1 (active), 1.2--1.3 (job_run_details,
-- jobname, jobname_username_uniq), 1.4-1--1.5 (jobname becomes text). --------------

CREATE SCHEMA cron;
CREATE SEQUENCE cron.jobid_seq;

CREATE TABLE cron.job (
	jobid bigint primary key default pg_catalog.nextval('cron.jobid_seq'),
	schedule text not null,
	command text not null,
	nodename text not null default 'localhost',
	nodeport int not null default pg_catalog.inet_server_port(),
	database text not null default pg_catalog.current_database(),
	username text not null default current_user,
	active boolean not null default 'true',
	jobname text
);
GRANT SELECT ON cron.job TO public;
ALTER TABLE cron.job ENABLE ROW LEVEL SECURITY;
CREATE POLICY cron_job_policy ON cron.job USING (username OPERATOR(pg_catalog.=) current_user);

CREATE UNIQUE INDEX jobname_username_idx ON cron.job (jobname, username);
ALTER TABLE cron.job ADD CONSTRAINT jobname_username_uniq UNIQUE USING INDEX jobname_username_idx;

SELECT pg_catalog.pg_extension_config_dump('cron.job', '');
SELECT pg_catalog.pg_extension_config_dump('cron.jobid_seq', '');

CREATE SEQUENCE cron.runid_seq;
CREATE TABLE cron.job_run_details (
	jobid bigint,
	runid bigint primary key default pg_catalog.nextval('cron.runid_seq'),
	job_pid integer,
	database text,
	username text,
	command text,
	status text,
	return_message text,
	start_time timestamptz,
	end_time timestamptz
);

GRANT SELECT ON cron.job_run_details TO public;
GRANT DELETE ON cron.job_run_details TO public;
ALTER TABLE cron.job_run_details ENABLE ROW LEVEL SECURITY;
CREATE POLICY cron_job_run_details_policy ON cron.job_run_details USING (username OPERATOR(pg_catalog.=) current_user);

SELECT pg_catalog.pg_extension_config_dump('cron.job_run_details', '');
SELECT pg_catalog.pg_extension_config_dump('cron.runid_seq', '');

-- 1.4--1.4-1: pg_dump reads the sequences.
GRANT SELECT ON SEQUENCE cron.jobid_seq TO public;
GRANT SELECT ON SEQUENCE cron.runid_seq TO public;

-- Internals of the stand-in (the C code's helpers) ------------------------------------

-- The role pg_cron's C code gets from GetUserId(): whoever called the SECURITY
-- DEFINER function that calls this (see the header).
CREATE FUNCTION cron._caller() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN current_setting('role') = 'none' THEN session_user::text
              ELSE current_setting('role') END
$$;

-- ParseSchedule(): a cron entry as pg_cron's parser (src/entry.c, Vixie cron's)
-- reads it — five fields of comma-separated numbers, names (months, weekdays),
-- ranges and /steps within each field's bounds, '$' alone for the last day of
-- the month, anything after the fifth field ignored (Vixie cron's command) —,
-- an @-special, or TryParseInterval()'s '<1-59> second[s]'. As in entry.c, a
-- step needs a range or '*' and is at most the field's upper bound (since
-- 1.6.5; 1.4 took */60), and a reversed range (5-1) is accepted (it matches
-- nothing).
CREATE FUNCTION cron._valid_schedule(schedule text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s text := lower(btrim(schedule, E' \t\n'));
  fields text[];
  lows int[] := ARRAY[0, 0, 1, 1, 0];
  highs int[] := ARRAY[59, 23, 31, 12, 7];
  months text[] := ARRAY['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
  days text[] := ARRAY['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
  item text;
  bound text;
  m text[];
  n int;
BEGIN
  IF s ~ '^\d+\s*seconds?$' THEN
    RETURN (substring(s FROM '^\d+'))::numeric BETWEEN 1 AND 59;
  END IF;
  IF s ~ '^@(reboot|restart|yearly|annually|monthly|weekly|daily|midnight|hourly)$' THEN
    RETURN true;
  END IF;
  fields := regexp_split_to_array(s, '\s+');
  IF cardinality(fields) < 5 THEN
    RETURN false;
  END IF;
  IF fields[3] = '$' THEN
    fields[3] := '*';
  END IF;
  FOR f IN 1..5 LOOP
    FOREACH item IN ARRAY string_to_array(fields[f], ',') LOOP
      m := regexp_match(item, '^(\*|[0-9a-z]+)(?:-([0-9a-z]+))?(?:/(\d{1,9}))?$');
      IF m IS NULL OR (m[1] = '*' AND m[2] IS NOT NULL)
         OR (m[1] <> '*' AND m[2] IS NULL AND m[3] IS NOT NULL)
         OR coalesce(m[3]::int NOT BETWEEN 1 AND highs[f], false) THEN
        RETURN false;
      END IF;
      CONTINUE WHEN m[1] = '*';
      FOREACH bound IN ARRAY ARRAY[m[1], coalesce(m[2], m[1])] LOOP
        n := CASE
          WHEN bound ~ '^\d{1,9}$' THEN bound::int
          WHEN f = 4 THEN array_position(months, bound)
          WHEN f = 5 THEN array_position(days, bound) - 1
        END;
        IF n IS NULL OR n NOT BETWEEN lows[f] AND highs[f] THEN
          RETURN false;
        END IF;
      END LOOP;
    END LOOP;
  END LOOP;
  RETURN true;
END
$$;

-- ScheduleCronJob(): validates, checks the job's role may connect, and inserts
-- the job — upserting by (jobname, username) when it has a name. Runs with the
-- privileges of the SECURITY DEFINER function that calls it; postgres may
-- execute it (Supabase grants all of cron's functions) but cannot write
-- cron.job with its own privileges.
CREATE FUNCTION cron._schedule_job(
  job_name text, schedule text, command text, database text, username text, active boolean
) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  caller text := cron._caller();
  job_role text := caller;
  database_name text := coalesce(database, current_setting('cron.database_name', true), 'postgres');
  job_id bigint;
BEGIN
  IF NOT cron._valid_schedule(schedule) THEN
    RAISE EXCEPTION 'invalid schedule: %', schedule
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use cron format (e.g. 5 4 * * *), or interval format ''[1-59] seconds''';
  END IF;
  IF username IS NOT NULL THEN
    IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = caller) THEN
      RAISE EXCEPTION 'must be superuser to create a job for another role' USING ERRCODE = 'internal_error';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = username) THEN
      RAISE EXCEPTION 'role "%" does not exist', username USING ERRCODE = 'internal_error';
    END IF;
    IF NOT (SELECT r.rolcanlogin FROM pg_roles r WHERE r.rolname = username) THEN
      RAISE EXCEPTION 'role "%" can not log in', username USING ERRCODE = 'internal_error',
        DETAIL = 'Jobs may only be run by roles that have the LOGIN attribute.';
    END IF;
    job_role := username;
  END IF;
  IF NOT has_database_privilege(job_role, database_name, 'CONNECT') THEN
    RAISE EXCEPTION 'User % does not have CONNECT privilege on %', job_role, database_name
      USING ERRCODE = 'internal_error';
  END IF;
  INSERT INTO cron.job AS j (schedule, command, nodename, nodeport, database, username, active, jobname)
  VALUES (schedule, command, 'localhost', inet_server_port(), database_name, job_role, active, job_name)
  ON CONFLICT ON CONSTRAINT jobname_username_uniq
  DO UPDATE SET schedule = excluded.schedule, command = excluded.command, database = excluded.database
  RETURNING j.jobid INTO job_id;
  RETURN job_id;
END
$$;
REVOKE ALL ON FUNCTION cron._schedule_job(text, text, text, text, text, boolean) FROM public;

-- EnsureDeletePermission() and the delete of cron_unschedule*().
CREATE FUNCTION cron._unschedule_job(job cron.job) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  caller text := cron._caller();
BEGIN
  IF job.username IS DISTINCT FROM caller AND NOT has_table_privilege(caller, 'cron.job', 'DELETE') THEN
    RAISE EXCEPTION 'permission denied for table job' USING ERRCODE = 'insufficient_privilege';
  END IF;
  DELETE FROM cron.job j WHERE j.jobid = job.jobid;
  RETURN true;
END
$$;
REVOKE ALL ON FUNCTION cron._unschedule_job(cron.job) FROM public;

-- The SQL interface, with 1.6's signatures ------------------------------------------------

CREATE FUNCTION cron.schedule(schedule text, command text)
    RETURNS bigint
    LANGUAGE sql STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT cron._schedule_job(NULL, schedule, command, NULL, NULL, true) $$;
COMMENT ON FUNCTION cron.schedule(text,text)
    IS 'schedule a pg_cron job';

CREATE FUNCTION cron.unschedule(job_id bigint)
    RETURNS bool
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
  job cron.job;
BEGIN
  SELECT * INTO job FROM cron.job j WHERE j.jobid = job_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'could not find valid entry for job %', job_id USING ERRCODE = 'internal_error';
  END IF;
  RETURN cron._unschedule_job(job);
END
$$;
COMMENT ON FUNCTION cron.unschedule(bigint)
    IS 'unschedule a pg_cron job';

-- The real trigger invalidates the scheduler's job cache; there is no cache here.
CREATE FUNCTION cron.job_cache_invalidate()
    RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN RETURN NULL; END $$;
COMMENT ON FUNCTION cron.job_cache_invalidate()
    IS 'invalidate job cache';

CREATE TRIGGER cron_job_cache_invalidate
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON cron.job
    FOR STATEMENT EXECUTE PROCEDURE cron.job_cache_invalidate();

CREATE FUNCTION cron.schedule(job_name text,
                              schedule text,
                              command text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF job_name IS NULL THEN
    RAISE EXCEPTION 'job_name can not be NULL' USING ERRCODE = 'internal_error';
  ELSIF schedule IS NULL THEN
    RAISE EXCEPTION 'schedule can not be NULL' USING ERRCODE = 'internal_error';
  ELSIF command IS NULL THEN
    RAISE EXCEPTION 'command can not be NULL' USING ERRCODE = 'internal_error';
  END IF;
  RETURN cron._schedule_job(job_name, schedule, command, NULL, NULL, true);
END
$$;
COMMENT ON FUNCTION cron.schedule(text,text,text)
IS 'schedule a pg_cron job';

CREATE FUNCTION cron.alter_job(job_id bigint,
								schedule text default null,
								command text default null,
								database text default null,
								username text default null,
								active boolean default null)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  caller text := cron._caller();
  caller_is_superuser boolean := (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = caller);
  job_role text := caller;
BEGIN
  IF job_id IS NULL THEN
    RAISE EXCEPTION 'job_id can not be NULL' USING ERRCODE = 'internal_error';
  END IF;
  IF username IS NOT NULL THEN
    IF NOT caller_is_superuser THEN
      RAISE EXCEPTION 'must be superuser to alter username' USING ERRCODE = 'internal_error';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = username)
       OR NOT (SELECT r.rolcanlogin FROM pg_roles r WHERE r.rolname = username) THEN
      RAISE EXCEPTION 'role "%" can not log in', username USING ERRCODE = 'internal_error';
    END IF;
    job_role := username;
  END IF;
  IF database IS NOT NULL AND NOT has_database_privilege(job_role, database, 'CONNECT') THEN
    RAISE EXCEPTION 'User % does not have CONNECT privilege on %', job_role, database
      USING ERRCODE = 'internal_error';
  END IF;
  IF schedule IS NOT NULL AND NOT cron._valid_schedule(schedule) THEN
    RAISE EXCEPTION 'invalid schedule: %', schedule
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use cron format (e.g. 5 4 * * *), or interval format ''[1-59] seconds''';
  END IF;
  IF schedule IS NULL AND command IS NULL AND database IS NULL AND username IS NULL AND active IS NULL THEN
    RAISE EXCEPTION 'no updates specified' USING ERRCODE = 'internal_error',
      HINT = 'You must specify at least one job attribute to change when calling alter_job';
  END IF;
  UPDATE cron.job j
  SET database = coalesce(alter_job.database, j.database),
      schedule = coalesce(alter_job.schedule, j.schedule),
      command = coalesce(alter_job.command, j.command),
      username = coalesce(alter_job.username, j.username),
      active = coalesce(alter_job.active, j.active)
  WHERE j.jobid = job_id AND (caller_is_superuser OR j.username = caller);
  IF NOT FOUND THEN
    RAISE EXCEPTION 'Job % does not exist or you don''t own it', job_id USING ERRCODE = 'internal_error';
  END IF;
END
$$;

COMMENT ON FUNCTION cron.alter_job(bigint,text,text,text,text,boolean)
IS 'Alter the job identified by job_id. Any option left as NULL will not be modified.';

/* admin should decide whether alter_job is safe by explicitly granting execute */
REVOKE ALL ON FUNCTION cron.alter_job(bigint,text,text,text,text,boolean) FROM public;

CREATE FUNCTION cron.schedule_in_database(job_name text,
										  schedule text,
										  command text,
										  database text,
										  username text default null,
										  active boolean default 'true')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF job_name IS NULL THEN
    RAISE EXCEPTION 'job_name can not be NULL' USING ERRCODE = 'internal_error';
  ELSIF schedule IS NULL THEN
    RAISE EXCEPTION 'schedule can not be NULL' USING ERRCODE = 'internal_error';
  ELSIF command IS NULL THEN
    RAISE EXCEPTION 'command can not be NULL' USING ERRCODE = 'internal_error';
  END IF;
  RETURN cron._schedule_job(job_name, schedule, command, database, username, coalesce(active, true));
END
$$;

COMMENT ON FUNCTION cron.schedule_in_database(text,text,text,text,text,boolean)
IS 'schedule a pg_cron job';

/* admin should decide whether cron.schedule_in_database is safe by explicitly granting execute */
REVOKE ALL ON FUNCTION cron.schedule_in_database(text,text,text,text,text,boolean) FROM public;

-- 1.4-1--1.5: unschedule by a text name.
CREATE FUNCTION cron.unschedule(job_name text)
    RETURNS bool
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
  job cron.job;
BEGIN
  SELECT * INTO job FROM cron.job j WHERE j.jobname = job_name AND j.username = cron._caller() FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'could not find valid entry for job ''%''', job_name USING ERRCODE = 'internal_error';
  END IF;
  RETURN cron._unschedule_job(job);
END
$$;
COMMENT ON FUNCTION cron.unschedule(text)
    IS 'unschedule a pg_cron job';
