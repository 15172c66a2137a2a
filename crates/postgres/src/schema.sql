-- latchkey's PostgreSQL schema, version 1. `@schema@` stands for the schema the scope URL
-- names (`?schema=`, default `latchkey`) and `@mark@` for its name as a string literal;
-- the scope runs this file once, when it finds the schema missing or older.

CREATE SCHEMA IF NOT EXISTS @schema@;

CREATE TABLE IF NOT EXISTS @schema@.version (version int NOT NULL);

-- The fencing tokens of a name are `epoch * 2^32 + n`. `n` counts in the unlogged table
-- `queues` (no disk flush per grant); the epoch is durable and goes up whenever that
-- count is missing: the first use of a name, and after a crash (which empties unlogged
-- tables). So tokens strictly increase per name across crashes, for 2^31 epochs of 2^32
-- grants each.
CREATE TABLE IF NOT EXISTS @schema@.epochs (
    name text PRIMARY KEY,
    epoch bigint NOT NULL
);

-- A name's queue at a glance: its last token, the permits its requests ask for in all
-- (`queued`: a request holds at once when its own permits take it to no more than
-- `capacity`), and the capacity they ask with. Every change of a name's requests updates
-- this row first, so its row lock makes them one at a time.
CREATE UNLOGGED TABLE IF NOT EXISTS @schema@.queues (
    name text PRIMARY KEY,
    token bigint NOT NULL,
    queued bigint NOT NULL,
    capacity bigint NOT NULL
);

-- One row per request, held or waiting, in token order. A row lives while its session
-- lives: the session's connection holds the advisory lock whose key is the session's
-- number, a random 61-bit number with bit 62 set (so that it never meets the small keys
-- applications use, nor, in practice, another session's, of any schema, ever)
-- (`backend` is its server process, for people to read). Rows of dead sessions are
-- ignored, and deleted by whoever meets them; a crash empties the table (unlogged), as it
-- ends every session.
CREATE UNLOGGED TABLE IF NOT EXISTS @schema@.requests (
    name text NOT NULL,
    token bigint NOT NULL,
    session bigint NOT NULL,
    backend int NOT NULL,
    permits bigint NOT NULL,
    capacity bigint NOT NULL,
    pid bigint NOT NULL,
    host text NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, token)
);

-- The channel a name's waiters listen on (a hash: a collision only wakes someone for nothing).
CREATE OR REPLACE FUNCTION @schema@.channel(p_name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'latchkey_' || md5(@mark@ || '/' || p_name)
$$;

-- Fails unless this connection is the session `p_session` started on: a pooler in
-- transaction mode (PgBouncer) hands statements to backends of other clients.
CREATE OR REPLACE FUNCTION @schema@.check_session(p_session bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF current_setting('latchkey.session', true) IS DISTINCT FROM p_session::text THEN
        RAISE EXCEPTION USING ERRCODE = 'LK001',
            MESSAGE = 'this statement ran on another server session than the latchkey session it belongs to';
    END IF;
END
$$;

-- The sessions among `p_sessions` that have ended: those whose advisory lock a shared
-- try-lock gets (and gives back at once), without a scan of `pg_locks`. The calling
-- session is alive by definition (its own lock would not stop it).
CREATE OR REPLACE FUNCTION @schema@.dead(p_sessions bigint[])
RETURNS SETOF bigint LANGUAGE sql VOLATILE AS $$
    SELECT s.session FROM unnest(p_sessions) AS s(session)
    WHERE s.session IS DISTINCT FROM nullif(current_setting('latchkey.session', true), '')::bigint
      AND CASE WHEN pg_try_advisory_lock_shared(s.session)
               THEN pg_advisory_unlock_shared(s.session)
               ELSE false END
$$;

-- Deletes the requests of `p_name` whose sessions have ended, and wakes the name's waiters
-- if it deleted any.
CREATE OR REPLACE FUNCTION @schema@.sweep(p_name text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_sessions bigint[];
    v_freed bigint;
BEGIN
    PERFORM 1 FROM @schema@.queues q WHERE q.name = p_name FOR UPDATE;
    SELECT array_agg(DISTINCT r.session) INTO v_sessions FROM @schema@.requests r WHERE r.name = p_name;
    IF v_sessions IS NULL THEN
        RETURN;
    END IF;
    WITH gone AS (
        DELETE FROM @schema@.requests r
        WHERE r.name = p_name AND r.session IN (SELECT @schema@.dead(v_sessions))
        RETURNING r.permits
    )
    SELECT sum(gone.permits) INTO v_freed FROM gone;
    IF v_freed IS NOT NULL THEN
        UPDATE @schema@.queues q SET queued = q.queued - v_freed WHERE q.name = p_name;
        PERFORM pg_notify(@schema@.channel(p_name), '');
    END IF;
END
$$;

-- Where the request `p_token` of `p_name` stands. The one rule of every scope: a request
-- holds when the permits of the requests before it plus its own fit the capacity (FIFO,
-- no barging). `blockers` are the sessions of the requests before it, while it waits.
-- With `p_sweep` (a session ahead was seen to end), the requests of ended sessions are
-- deleted first if the request would wait.
CREATE OR REPLACE FUNCTION @schema@.standing(p_name text, p_token bigint, p_sweep boolean,
    OUT holds boolean, OUT gone boolean, OUT blockers bigint[])
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_before bigint;
    v_mine record;
BEGIN
    FOR attempt IN 1..2 LOOP
        SELECT r.permits, r.capacity INTO v_mine FROM @schema@.requests r
        WHERE r.name = p_name AND r.token = p_token;
        IF NOT FOUND THEN
            holds := false; gone := true;
            RETURN;
        END IF;
        SELECT coalesce(sum(r.permits), 0) INTO v_before
        FROM @schema@.requests r WHERE r.name = p_name AND r.token < p_token;
        IF v_before + v_mine.permits <= v_mine.capacity THEN
            holds := true; gone := false;
            RETURN;
        END IF;
        -- Only a request that waits behind an ended session pays for looking at who is alive.
        EXIT WHEN NOT p_sweep OR attempt = 2;
        PERFORM @schema@.sweep(p_name);
    END LOOP;
    holds := false; gone := false;
    SELECT array_agg(DISTINCT r.session) INTO blockers
    FROM @schema@.requests r WHERE r.name = p_name AND r.token < p_token;
END
$$;

-- Starts a new epoch of `p_name`'s tokens (see `epochs`), making its queue row if missing.
CREATE OR REPLACE FUNCTION @schema@.new_epoch(p_name text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_epoch bigint;
BEGIN
    INSERT INTO @schema@.epochs AS e VALUES (p_name, 0)
    ON CONFLICT (name) DO UPDATE SET epoch = e.epoch + 1
    RETURNING e.epoch INTO v_epoch;
    IF v_epoch >= 2147483647 THEN
        RAISE EXCEPTION USING ERRCODE = 'LK003', MESSAGE = 'the fencing tokens of this name are used up';
    END IF;
    INSERT INTO @schema@.queues AS q VALUES (p_name, v_epoch << 32, 0, 0)
    ON CONFLICT (name) DO UPDATE SET token = excluded.token;
END
$$;

-- Queues a request of session `p_session` (on backend `p_backend`) for `p_permits` of
-- `p_capacity`, and says where it stands. With `p_try`, queues it only if it holds at
-- once (`token` is null otherwise). Fails with LK002 (hint: the capacity in use) when the
-- name is in use with another capacity.
CREATE OR REPLACE FUNCTION @schema@.enqueue(p_name text, p_session bigint, p_backend int,
    p_permits bigint, p_capacity bigint, p_pid bigint, p_host text, p_try boolean,
    OUT token bigint, OUT holds boolean, OUT blockers bigint[], OUT channel text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_queued bigint;
    v_queue record;
    v_swept boolean := false;
    v_standing record;
BEGIN
    IF current_setting('latchkey.session', true) IS DISTINCT FROM p_session::text THEN
        PERFORM @schema@.check_session(p_session);
    END IF;
    LOOP
        -- The common case in one statement; its row lock orders the name's changes.
        UPDATE @schema@.queues q
        SET token = q.token + 1, queued = q.queued + p_permits,
            capacity = CASE WHEN q.queued = 0 THEN p_capacity ELSE q.capacity END
        WHERE q.name = p_name AND ((q.token + 1) & 4294967295) <> 0
          AND (q.queued = 0 OR q.capacity = p_capacity)
          AND (NOT p_try OR q.queued + p_permits <= p_capacity)
        RETURNING q.token, q.queued INTO token, v_queued;
        EXIT WHEN FOUND;
        -- Why not: a new name (or a crash emptied the queues), this epoch's tokens used up,
        -- another capacity in use, or no room for a try. Dead requests may be in the way.
        SELECT q.token, q.queued, q.capacity INTO v_queue FROM @schema@.queues q
        WHERE q.name = p_name FOR UPDATE;
        IF NOT FOUND OR ((v_queue.token + 1) & 4294967295) = 0 THEN
            PERFORM @schema@.new_epoch(p_name);
        ELSIF NOT v_swept THEN
            PERFORM @schema@.sweep(p_name);
            v_swept := true;
        ELSIF v_queue.queued > 0 AND v_queue.capacity <> p_capacity THEN
            RAISE EXCEPTION USING ERRCODE = 'LK002', HINT = v_queue.capacity::text,
                MESSAGE = format('the name is in use with a capacity of %s', v_queue.capacity);
        ELSE
            holds := false;
            RETURN;
        END IF;
    END LOOP;
    INSERT INTO @schema@.requests (name, token, session, backend, permits, capacity, pid, host)
    VALUES (p_name, token, p_session, p_backend, p_permits, p_capacity, p_pid, p_host);
    holds := v_queued <= p_capacity;
    IF NOT holds THEN
        v_standing := @schema@.standing(p_name, token, false);
        holds := v_standing.holds;
        blockers := v_standing.blockers;
        channel := @schema@.channel(p_name);
    END IF;
END
$$;

-- Gives back (or withdraws) the request `p_token` of `p_name`; false if it was not there.
-- Wakes the name's waiters if anyone is left in its queue.
CREATE OR REPLACE FUNCTION @schema@.release(p_name text, p_token bigint, p_session bigint)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_permits bigint;
    v_queued bigint;
BEGIN
    DELETE FROM @schema@.requests r WHERE r.name = p_name AND r.token = p_token AND r.session = p_session
    RETURNING r.permits INTO v_permits;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE @schema@.queues q SET queued = q.queued - v_permits WHERE q.name = p_name
    RETURNING q.queued INTO v_queued;
    IF v_queued > 0 THEN
        PERFORM pg_notify(@schema@.channel(p_name), '');
    END IF;
    RETURN true;
END
$$;

-- If anyone waits behind the held request `p_token`, moves it to the back of the queue
-- under a new token; otherwise keeps it. `token` is null if the request was gone.
CREATE OR REPLACE FUNCTION @schema@.cede(p_name text, p_token bigint, p_session bigint,
    OUT token bigint, OUT holds boolean, OUT blockers bigint[], OUT channel text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_mine record;
    v_again record;
BEGIN
    PERFORM 1 FROM @schema@.queues q WHERE q.name = p_name FOR UPDATE;
    SELECT * INTO v_mine FROM @schema@.requests r
    WHERE r.name = p_name AND r.token = p_token AND r.session = p_session;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM @schema@.requests r WHERE r.name = p_name AND r.token > p_token) THEN
        PERFORM @schema@.sweep(p_name);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM @schema@.requests r WHERE r.name = p_name AND r.token > p_token) THEN
        token := p_token;
        holds := true;
        RETURN;
    END IF;
    PERFORM @schema@.release(p_name, p_token, p_session);
    v_again := @schema@.enqueue(p_name, p_session, v_mine.backend, v_mine.permits, v_mine.capacity,
        v_mine.pid, v_mine.host, false);
    token := v_again.token;
    holds := v_again.holds;
    blockers := v_again.blockers;
    channel := v_again.channel;
END
$$;

-- The live requests of `p_name` (of every name when null), in queue order, each with
-- whether it holds (the rule of `standing`).
CREATE OR REPLACE FUNCTION @schema@.live(p_name text)
RETURNS TABLE (name text, token bigint, session bigint, permits bigint, capacity bigint,
    pid bigint, host text, held_for double precision, holds boolean)
LANGUAGE sql VOLATILE AS $$
    WITH mine AS MATERIALIZED (
        SELECT * FROM @schema@.requests r WHERE p_name IS NULL OR r.name = p_name
    ), dead AS MATERIALIZED (
        SELECT @schema@.dead(array_agg(DISTINCT m.session)) AS session FROM mine m
    ), alive AS (
        SELECT * FROM mine m WHERE m.session NOT IN (SELECT d.session FROM dead d WHERE d.session IS NOT NULL)
    )
    SELECT a.name, a.token, a.session, a.permits, a.capacity, a.pid, a.host,
        extract(epoch FROM clock_timestamp() - a.since)::double precision,
        sum(a.permits) OVER (PARTITION BY a.name ORDER BY a.token) <= a.capacity
    FROM alive a ORDER BY a.name, a.token
$$;

DELETE FROM @schema@.version;
INSERT INTO @schema@.version VALUES (1);
