//! Throwaway PostgreSQL servers: `initdb` and `postgres` run as an unprivileged user (they
//! refuse root), in a temporary directory, on a loopback port; killed and removed when the
//! server is dropped.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::spawn::{free_ports, spawn};

/// How long the server may take to start.
const TIMEOUT: Duration = Duration::from_secs(30);
/// What to tell a reader whose machine has no PostgreSQL.
const INSTALL: &str =
    "the tests need PostgreSQL's initdb and postgres on PATH: on Debian or Ubuntu, `apt-get install postgresql`";
/// The unprivileged user the server runs as when the tests run as root.
const NOBODY: u32 = 65534;

/// A PostgreSQL server of its own for one test or benchmark, on a free loopback port, with
/// `fsync=off` and trust authentication for the superuser `postgres`.
///
/// Dropping the server kills it (SIGKILL: nothing of it needs to survive) and removes its
/// directory; it also dies with the test process (`PR_SET_PDEATHSIG`).
///
/// ```no_run
/// let server = latchkey_testkit::PostgresServer::start();
/// let url = server.url("app"); // postgres://postgres@127.0.0.1:port/postgres?…
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Whether the server offers TLS (with the kit's certificates).
    tls: bool,
}

impl PostgresServer {
    /// Makes a database cluster with `initdb` and starts `postgres` on it.
    ///
    /// # Panics
    ///
    /// If the binaries are missing (the message says what to install), or the server does
    /// not accept connections within 30 s (the message quotes its log).
    pub fn start() -> PostgresServer {
        Self::start_with(false)
    }

    /// [`start`](Self::start), with TLS offered (`ssl=on`) on a certificate for 127.0.0.1
    /// signed by a CA of the kit's ([`ca_file`](Self::ca_file)). Needs `openssl(1)`.
    pub fn start_tls() -> PostgresServer {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> PostgresServer {
        static SERVERS: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "latchkey-testkit-postgres-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("testkit: cannot create {}: {e}", dir.display()));
        // The server's user must own its data directory, and reach it.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("testkit: chmod the server's directory");
        let port = free_ports(1)[0];
        let mut server = PostgresServer { dir, port, child: None, tls };
        if tls {
            crate::certs::make(&server.dir);
            // The server refuses a key others can read, or that it does not own.
            let key = server.dir.join("server.key");
            fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("testkit: chmod the key");
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                std::os::unix::fs::chown(&key, Some(NOBODY), Some(NOBODY)).expect("testkit: chown the key");
            }
        }
        server.initdb();
        server.launch();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn initdb(&self) {
        let mut command = Command::new(pg_bin("initdb"));
        command.arg("-D").arg(self.data()).args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        as_unprivileged(&mut command);
        let out = command.output().unwrap_or_else(|e| panic!("testkit: cannot run initdb: {e}; {INSTALL}"));
        assert!(out.status.success(), "testkit: initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts (or starts again) the server on its data directory and port.
    ///
    /// # Panics
    ///
    /// If the server exits or does not answer within 30 s (the message quotes its log).
    fn launch(&mut self) {
        if let Err(log) = self.try_launch() {
            panic!("testkit: postgres exited:\n{log}");
        }
    }

    /// [`launch`](Self::launch), returning the log's tail if the server exits at once.
    fn try_launch(&mut self) -> Result<(), String> {
        let log = fs::File::options().create(true).append(true).open(self.log()).expect("testkit: open the log");
        fs::set_permissions(self.log(), fs::Permissions::from_mode(0o666)).expect("testkit: chmod the log");
        let mut command = Command::new(pg_bin("postgres"));
        command
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            // fsync=off loses nothing when processes die (only when the machine does); commits
            // stay synchronous, so a restart after SIGKILL keeps every committed row.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200", "-c", "log_min_messages=warning"])
            .args(if self.tls {
                vec![
                    "-c".to_string(),
                    "ssl=on".to_string(),
                    "-c".to_string(),
                    format!("ssl_cert_file={}", self.dir.join("server.pem").display()),
                    "-c".to_string(),
                    format!("ssl_key_file={}", self.dir.join("server.key").display()),
                ]
            } else {
                Vec::new()
            })
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("testkit: duplicate a log handle"))
            .stderr(log);
        as_unprivileged(&mut command);
        match spawn(command) {
            Ok(child) => self.child = Some(child),
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!("testkit: cannot run postgres: {e}; {INSTALL}"),
            Err(e) => panic!("testkit: cannot run postgres: {e}"),
        }
        self.wait_ready()
    }

    /// Waits until the server answers `pg_isready`; the log's tail if it exits first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let ready = Command::new(pg_bin("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-t", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success());
            match ready {
                Ok(true) => return Ok(()),
                Err(e) => panic!("testkit: cannot run pg_isready: {e}; {INSTALL}"),
                Ok(false) => {}
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("({status})\n{}", self.log_tail()));
            }
            assert!(start.elapsed() < TIMEOUT, "testkit: postgres did not start in {TIMEOUT:?}:\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log()).unwrap_or_default();
        log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for the superuser, to database `postgres`, with extra query
    /// parameters `query` (such as `ttl=5s`; empty for none).
    pub fn url(&self, query: &str) -> String {
        let base = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        if query.is_empty() {
            base
        } else {
            format!("{base}?{query}")
        }
    }

    /// Runs `sql` through `psql` as the superuser and returns its unaligned output.
    ///
    /// # Panics
    ///
    /// If `psql` fails; the message quotes its error.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(pg_bin("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("testkit: cannot run psql: {e}; {INSTALL}"));
        assert!(out.status.success(), "testkit: psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Runs `sql` through `psql` as the superuser, expecting it to fail, and returns the
    /// error psql printed (verbose: with the SQLSTATE).
    ///
    /// # Panics
    ///
    /// If `sql` succeeds, or psql cannot run.
    pub fn psql_error(&self, sql: &str) -> String {
        let out = Command::new(pg_bin("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("testkit: cannot run psql: {e}; {INSTALL}"));
        assert!(!out.status.success(), "testkit: psql {sql:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Kills the server (SIGKILL) and starts it again on the same data: every session ends,
    /// committed data stays.
    pub fn restart(&mut self) {
        self.kill();
        // A postmaster killed outright leaves its shared memory and pid file: postgres
        // cleans up after a dead postmaster by itself when it starts again, but refuses to
        // while a backend of the old one has not yet noticed and exited (it still holds the
        // shared memory). Start again until the old backends are gone.
        let start = Instant::now();
        loop {
            match self.try_launch() {
                Ok(()) => return,
                Err(log) if log.contains("is still in use") && start.elapsed() < TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(log) => panic!("testkit: postgres exited after a crash:\n{log}"),
            }
        }
    }

    /// Stops the server as an administrator would (a fast shutdown: SIGINT, every session
    /// ended, a checkpoint written) and starts it again. Unlike [`restart`](Self::restart),
    /// no crash recovery runs, so unlogged tables keep their rows.
    pub fn restart_clean(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child's.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            let _ = child.wait();
        }
        self.launch();
    }

    /// The server's log so far (statements too, for sessions that set `log_statement`).
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Backends of a killed postmaster exit on their own; wait until the port is free.
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && start.elapsed() < TIMEOUT {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The CA certificate (PEM) that signed the server's certificate ([`start_tls`](Self::start_tls)).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's directory (data, log, socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL program: from `PATH`, or else from Debian's `/usr/lib/postgresql/<version>/bin`
/// (which the `postgresql` package does not put on `PATH`), the newest version first.
fn pg_bin(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).any(|p| p.is_file()))
        .unwrap_or(false);
    if on_path {
        return PathBuf::from(name);
    }
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(|d| d.ok()).map(|d| d.path().join("bin").join(name)).filter(|p| p.is_file()).collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from(name))
}

/// Runs `command` as an unprivileged user when this process is root (PostgreSQL refuses
/// to run as root).
fn as_unprivileged(command: &mut Command) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        command.uid(NOBODY).gid(NOBODY);
    }
}
