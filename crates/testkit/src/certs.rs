//! Throwaway TLS certificates for the servers of the kit, made with `openssl(1)`.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Makes in `dir` a CA (`ca.pem`, `ca.key`) and a server certificate for 127.0.0.1 signed
/// by it (`server.pem`, `server.key`), valid for two days.
///
/// # Panics
///
/// If `openssl` cannot run or fails (the message says what to install).
pub(crate) fn make(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("testkit: cannot run openssl (apt-get install openssl): {e}"));
        assert!(out.status.success(), "testkit: openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("testkit: cannot write san.ext");
    run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]
        .into_iter()
        .chain(["-subj", "/CN=latchkey-testkit-ca"])
        .collect::<Vec<_>>());
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}
