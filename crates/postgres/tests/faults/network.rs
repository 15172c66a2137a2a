//! The scope and its server across a network, and the server's rules: a client cut off by
//! a proxy that stops forwarding, a waiter that sends nothing while it waits, a pooler that
//! hands statements to other sessions, a user who may not make the schema, and a server
//! that is not there.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use latchkey::{ErrorKind, Scope};
use latchkey_testkit::{PostgresServer, Proxy};

use crate::support::{backend_of, url, wait_until, PATIENCE};

/// Issue 11: a holder cut off from the server by a proxy that stops forwarding sees its
/// loss (`lost()`) once its session's validity ends (a TTL after its last answered
/// keep-alive); the server ends the silent session after a TTL (`idle_session_timeout`),
/// never before that, and a waiter is granted then.
#[test]
fn a_client_cut_off_by_a_proxy_loses_its_hold_and_the_server_frees_it() {
    let server = PostgresServer::start();
    let proxy = Proxy::start(("127.0.0.1", server.port())).unwrap();
    let cut_url = format!("postgres://postgres@{}/postgres?ttl=2s&schema=cut&application_name=cut-off", proxy.addr());
    let cut_off = Scope::open(&cut_url).unwrap();
    let guard = cut_off.lock_blocking_timeout("job", PATIENCE).unwrap();
    let old_token = guard.fencing_token();

    let scope = Scope::open(&url(&server, "cut", "2s", "")).unwrap();
    let (granted_tx, granted) = mpsc::channel();
    let waiter = scope.clone();
    std::thread::spawn(move || {
        let guard = waiter.lock_blocking_timeout("job", PATIENCE);
        let _ = granted_tx.send((Instant::now(), guard));
    });
    wait_until("the waiter queues", || scope.inspect("job").unwrap().waiters == 1);

    proxy.cut();
    let cut = Instant::now();
    latchkey_model::block_on_until(guard.lost(), Some(cut + PATIENCE)).expect("lost() fires");
    let lost_after = cut.elapsed();
    let (at, new) = granted.recv_timeout(PATIENCE).expect("the waiter is granted");
    let granted_after = at.saturating_duration_since(cut);
    println!("cut to lost(): {lost_after:?}; cut to the waiter's grant: {granted_after:?} (TTL 2 s)");
    assert!(guard.is_lost());
    let new = new.expect("the waiter's lock");
    assert!(new.fencing_token() > old_token);
    // The server may end the session only after the holder knows it lost it.
    assert!(granted_after >= lost_after, "granted {granted_after:?} after the cut, lost() only {lost_after:?}");
    assert_eq!(guard.release().unwrap_err().kind(), ErrorKind::HandleLost);
    new.release().unwrap();
    // A scope whose session was lost carries on with a new one once the network is back.
    proxy.heal();
    cut_off.lock_blocking_timeout("job", PATIENCE).expect("a new session after the cut").release().unwrap();
}

/// Issue 11: a waiter that waits 2 s sends nothing but its request, its `LISTEN` and one
/// look at where it stands, the keep-alive (every second while it waits behind another
/// session), and at the end its withdrawal and `UNLISTEN`: counted in the server's log of
/// the waiter's session (`log_statement=all`).
#[test]
fn a_waiter_sends_nothing_but_the_keep_alive_while_it_waits() {
    let server = PostgresServer::start();
    let holder = Scope::open(&url(&server, "quiet", "10s", "")).unwrap();
    let guard = holder.lock_blocking_timeout("job", PATIENCE).unwrap();
    let logged = "application_name=quiet-waiter&options=-c%20log_statement%3Dall";
    let waiter = Scope::open(&url(&server, "quiet", "10s", logged)).unwrap();
    let backend = backend_of(&server, "quiet-waiter");
    let prefix = format!("[{backend}] LOG:  ");
    let statements = || -> Vec<String> {
        server
            .log_text()
            .lines()
            .filter_map(|line| line.split_once(&prefix).map(|(_, rest)| rest.to_string()))
            .filter(|rest| rest.starts_with("statement:") || rest.starts_with("execute"))
            .collect()
    };
    let before = statements().len();
    let began = Instant::now();
    let waited = waiter.lock_blocking_timeout("job", Duration::from_secs(2));
    assert_eq!(waited.unwrap_err().kind(), ErrorKind::Timeout);
    let elapsed = began.elapsed();
    // The withdrawal and UNLISTEN run just after the timeout.
    wait_until("the waiter is withdrawn", || holder.inspect("job").unwrap().waiters == 0);
    std::thread::sleep(Duration::from_millis(200));
    let during: Vec<String> = statements().split_off(before);
    println!("a waiter of {elapsed:?} sent {} statements:\n  {}", during.len(), during.join("\n  "));
    let keep_alives = during.iter().filter(|s| s.contains(".dead(") || s.ends_with("SELECT 1")).count();
    let others = during.len() - keep_alives;
    // enqueue_fast, LISTEN, standing, the withdrawal, UNLISTEN.
    assert!(others <= 5, "{others} statements besides the keep-alive: {during:?}");
    assert!(keep_alives <= 3, "{keep_alives} keep-alives in {elapsed:?}: {during:?}");
    guard.release().unwrap();
}

/// Issue 11: a statement that reaches another server session than the scope's (what a
/// pooler in transaction mode does) is refused, not run: the session's number is a setting
/// of its own server session, and every queuing statement checks it. (No PgBouncer here:
/// the test calls the scope's function from another session, as such a pooler would.)
#[test]
fn a_statement_on_another_server_session_is_refused() {
    let server = PostgresServer::start();
    let scope = Scope::open(&url(&server, "pooled", "10s", "")).unwrap();
    let _guard = scope.lock_blocking_timeout("job", PATIENCE).unwrap();
    let session: i64 = server.psql("SELECT session FROM pooled.requests").parse().unwrap();
    let refused = server.psql_error(&format!(
        "SELECT * FROM pooled.enqueue('other', {session}, pg_backend_pid(), 1, 1, 1, 'h', false)"
    ));
    assert!(refused.contains("LK001") || refused.contains("another server session"), "{refused}");
    assert_eq!(server.psql("SELECT count(*) FROM pooled.requests WHERE name = 'other'"), "0");
}

/// Issue 11: a user who may not create the schema is told what to grant; once granted,
/// the scope makes its schema and works.
#[test]
fn a_user_who_may_not_make_the_schema_is_told_what_to_grant() {
    let server = PostgresServer::start();
    server.psql("CREATE ROLE weak LOGIN");
    let weak = format!("postgres://weak@127.0.0.1:{}/postgres?ttl=10s&schema=guarded", server.port());
    let err = Scope::open(&weak).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let text = err.to_string();
    assert!(text.contains("GRANT CREATE ON DATABASE postgres TO weak"), "{text}");
    assert_eq!(err.scope(), Some(weak.as_str()));
    server.psql("GRANT CREATE ON DATABASE postgres TO weak");
    let scope = Scope::open(&weak).expect("the scope opens once granted");
    scope.lock_blocking_timeout("job", PATIENCE).unwrap().release().unwrap();
}

/// Issue 11: a server that is not there is an `Unavailable` error naming where it was
/// looked for, and the URL (without its password).
#[test]
fn an_unreachable_server_is_named() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("postgres://app:secret@127.0.0.1:{port}/db?connect_timeout=2");
    let err = Scope::open(&url).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}/db")), "{text}");
    assert!(!text.contains("secret"), "{text}");
}
