//! The Redis scope over TLS (`rediss://`): a server whose certificate the CA of `ca=`
//! signed is trusted, one the system's CAs do not know is refused, and a plain client
//! cannot talk to a TLS-only server.

use latchkey::{ErrorKind, Scope};
use latchkey_testkit::RedisServer;

#[test]
fn rediss_with_the_servers_ca_locks_over_tls() {
    let server = RedisServer::start_tls();
    let url = server.url(&format!("ttl=5s&ca={}", server.ca_file().display()));
    let scope = Scope::open(&url).expect("the scope opens over TLS");
    scope.lock_blocking("job").unwrap().release().unwrap();
    assert_eq!(server.cli(&["PING"]), "PONG");
}

#[test]
fn a_server_the_system_does_not_trust_is_refused() {
    let server = RedisServer::start_tls();
    let err = Scope::open(&server.url("ttl=5s")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let plain = server.url("ttl=5s").replacen("rediss://", "redis://", 1);
    let err = Scope::open(&plain).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}
