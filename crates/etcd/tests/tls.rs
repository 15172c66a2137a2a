//! The etcd scope over TLS: `etcds://…?ca=FILE` (or `LATCHKEY_ETCD_CA`) locks through a
//! cluster that serves clients with a certificate of its own CA; a client that does not
//! trust that CA, or names a CA file that is not there, gets a clear error.

use latchkey::{ErrorKind, Scope};
use latchkey_testkit::EtcdCluster;

#[test]
fn locks_go_through_tls_with_the_clusters_ca() {
    let cluster = EtcdCluster::start_tls(1);
    let ca = cluster.ca_file();
    let url = cluster.tls_url("tls", &format!("ca={}&ttl=3s", ca.display()));
    let scope = Scope::open(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let guard = scope.lock_blocking("db").unwrap();
    assert!(scope.try_lock("db").unwrap().is_none());
    let token = guard.fencing_token();
    guard.release().unwrap();
    assert!(scope.lock_blocking("db").unwrap().fencing_token() > token);
    // The same lock, seen through plain HTTP on the same cluster: one namespace.
    let held = scope.lock_blocking("shared").unwrap();
    let plain = Scope::open(&cluster.url_with("tls", "ttl=3s")).unwrap();
    assert!(plain.is_locked("shared").unwrap());
    drop(held);
    scope.close_blocking().unwrap();
}

#[test]
fn a_client_that_does_not_trust_the_ca_or_lacks_its_file_is_told_why() {
    let cluster = EtcdCluster::start_tls(1);
    // The system's roots do not include the cluster's own CA.
    let untrusted = cluster.tls_url("tls", "ttl=3s");
    let err = Scope::open(&untrusted).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(err.scope(), Some(untrusted.as_str()));
    // A CA file that is not there.
    let missing = cluster.tls_url("tls", "ca=/nonexistent/ca.pem");
    let err = Scope::open(&missing).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidScope, "{err}");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}
