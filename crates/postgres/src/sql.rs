//! The statements the scope sends outside `schema.sql`'s functions: the two of an
//! uncontended acquire and release, and the start of a session. Public (hidden) for the
//! benchmark, which sends them raw to measure the SQL without the scope.

use latchkey_model::{Error, ErrorKind, Result};

/// The common case of `enqueue` as one plain statement (no function call), in the schema
/// `s` (quoted): a name in use with the same capacity, room for a try, and this very
/// session. It answers no row otherwise, and the `enqueue` function does the rest.
/// Parameters as `enqueue`'s: name, session, backend, permits, capacity, pid, host, try.
pub fn enqueue_fast(s: &str) -> String {
    format!(
        "WITH q AS (
            UPDATE {s}.queues q
            SET token = q.token + 1, queued = q.queued + $4,
                capacity = CASE WHEN q.queued = 0 THEN $5 ELSE q.capacity END
            WHERE q.name = $1 AND ((q.token + 1) & 4294967295) <> 0
              AND (q.queued = 0 OR q.capacity = $5) AND (NOT $8 OR q.queued + $4 <= $5)
              AND current_setting('latchkey.session', true) = $2::bigint::text
            RETURNING q.token, q.queued
         ), r AS (
            INSERT INTO {s}.requests (name, token, session, backend, permits, capacity, pid, host)
            SELECT $1, q.token, $2, $3, $4, $5, $6, $7 FROM q
         )
         SELECT q.token, q.queued <= $5 AS holds, NULL::bigint[] AS blockers,
            CASE WHEN q.queued > $5 THEN {s}.channel($1) END AS channel
         FROM q"
    )
}

/// `release` as one plain statement, in the schema `s`: deletes the request (name, token,
/// session), takes its permits off the name's `queued`, and notifies the name's channel if
/// anyone is left. Answers a row if the request was there.
pub fn release(s: &str) -> String {
    format!(
        "WITH d AS (
            DELETE FROM {s}.requests r WHERE r.name = $1 AND r.token = $2 AND r.session = $3
            RETURNING r.permits
         ), q AS (
            UPDATE {s}.queues q SET queued = q.queued - d.permits FROM d WHERE q.name = $1
            RETURNING q.queued
         )
         SELECT CASE WHEN q.queued > 0 THEN pg_notify({s}.channel($1), '') END FROM q"
    )
}

/// Takes the advisory lock of the session number `$1` and, if it got it, sets
/// `latchkey.session`, in one statement, so that both are of one server session even
/// behind a pooler. Answers whether it got the lock, and the server process.
pub const BEGIN_SESSION: &str = "SELECT locked, pg_backend_pid(), \
        CASE WHEN locked THEN set_config('latchkey.session', $1::bigint::text, false) END \
     FROM (SELECT pg_try_advisory_lock($1) AS locked OFFSET 0) AS taken";

/// A random session number: 61 random bits, bit 62 set. Random rather than from a
/// sequence, so that no two sessions of any schema of the database share one, ever, in
/// practice: a dead session's requests are told from a live one's by whether their
/// number's lock is held.
pub fn session_number() -> Result<i64> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut bytes)).map_err(|e| {
        Error::new(ErrorKind::Unavailable, format!("cannot read /dev/urandom for a session number: {e}"))
    })?;
    Ok(((u64::from_le_bytes(bytes) & ((1 << 61) - 1)) | (1 << 62)) as i64)
}
