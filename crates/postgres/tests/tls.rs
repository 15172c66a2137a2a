//! The PostgreSQL scope over TLS, with libpq's `sslmode`: `verify-full` and `verify-ca`
//! trust a server whose certificate a known CA signed and refuse one whose CA is unknown,
//! `require` and `prefer` encrypt without checking (as libpq; `require` checks the chain
//! when `sslrootcert` names a CA), and a CA file that is not one is a clear error.

use latchkey::{ErrorKind, Scope};
use latchkey_testkit::PostgresServer;

/// Whether the session named `app` is on TLS, as the server sees it.
fn on_tls(server: &PostgresServer, app: &str) -> String {
    server.psql(&format!(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = '{app}'"
    ))
}

#[test]
fn sslmode_require_with_the_servers_ca_locks_over_tls() {
    let server = PostgresServer::start_tls();
    let ca = server.ca_file();
    let url = server.url(&format!("ttl=5s&sslmode=require&sslrootcert={}&application_name=tls-client", ca.display()));
    let scope = Scope::open(&url).expect("the scope opens over TLS");
    let guard = scope.lock_blocking("job").unwrap();
    assert_eq!(on_tls(&server, "tls-client"), "t", "the session is on TLS");
    guard.release().unwrap();
    // `prefer` takes TLS when the server offers it.
    let url = server.url(&format!("ttl=5s&sslrootcert={}&application_name=tls-prefer", ca.display()));
    let scope = Scope::open(&url).expect("the scope opens with sslmode=prefer");
    scope.lock_blocking("job").unwrap().release().unwrap();
    assert_eq!(on_tls(&server, "tls-prefer"), "t");
    // `disable` does not.
    let url = server.url("ttl=5s&sslmode=disable&application_name=tls-off");
    let scope = Scope::open(&url).expect("the scope opens without TLS");
    scope.lock_blocking("job").unwrap().release().unwrap();
    assert_eq!(on_tls(&server, "tls-off"), "f");
}

#[test]
fn a_server_whose_certificate_no_trusted_ca_signed_is_refused() {
    let server = PostgresServer::start_tls();
    // Another CA than the server's.
    let other = server.dir().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem"])
        .args(["-days", "2", "-subj", "/CN=another-ca"])
        .current_dir(&other)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = server.url(&format!("ttl=5s&sslmode={mode}&sslrootcert={}", other.join("ca.pem").display()));
        let err = Scope::open(&url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{mode}: {err}");
        assert!(err.to_string().to_lowercase().contains("certificate"), "{mode}: {err}");
    }
    // Checking needs a root file, as with libpq.
    for mode in ["verify-full", "verify-ca"] {
        let err = Scope::open(&server.url(&format!("ttl=5s&sslmode={mode}"))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidScope, "{mode}: {err}");
        assert!(err.to_string().contains("root file"), "{mode}: {err}");
    }
    // With the server's CA, both checks trust it; `require` without a root file encrypts
    // unchecked, as libpq.
    let ca = server.ca_file();
    for (mode, app) in [("verify-full", "full"), ("verify-ca", "ca"), ("require", "plain")] {
        let query = match mode {
            "require" => format!("ttl=5s&sslmode=require&application_name={app}"),
            m => format!("ttl=5s&sslmode={m}&sslrootcert={}&application_name={app}", ca.display()),
        };
        let scope = Scope::open(&server.url(&query)).unwrap_or_else(|e| panic!("{mode}: {e}"));
        scope.lock_blocking("job").unwrap().release().unwrap();
        assert_eq!(on_tls(&server, app), "t", "{mode}");
    }
}

#[test]
fn a_ca_file_that_is_not_one_is_named() {
    let server = PostgresServer::start_tls();
    let bogus = server.dir().join("not-a-ca.pem");
    std::fs::write(&bogus, "hello").unwrap();
    let url = server.url(&format!("ttl=5s&sslmode=require&sslrootcert={}", bogus.display()));
    let err = Scope::open(&url).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidScope, "{err}");
    assert!(err.to_string().contains("not-a-ca.pem"), "{err}");
}
