//! Throwaway Redis servers: `redis-server` on a loopback port, in a temporary directory,
//! with persistence off; killed and removed when the server is dropped.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::spawn::{free_ports, spawn};

/// How long the server may take to start.
const TIMEOUT: Duration = Duration::from_secs(30);
/// What to tell a reader whose machine has no Redis.
const INSTALL: &str =
    "the tests need redis-server and redis-cli on PATH: on Debian or Ubuntu, `apt-get install redis-server`";

/// A Redis server of its own for one test or benchmark, on a free loopback port, with
/// persistence off (`save ""`, no append-only file): a restart empties it, as a crash of a
/// server without persistence does.
///
/// Dropping the server kills it (SIGKILL) and removes its directory; it also dies with the
/// test process (`PR_SET_PDEATHSIG`).
///
/// ```no_run
/// let server = latchkey_testkit::RedisServer::start();
/// assert_eq!(server.cli(&["PING"]), "PONG");
/// let url = server.url("ttl=5s"); // redis://127.0.0.1:port/0?ttl=5s
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Whether the server takes TLS (only) on its port, with the kit's certificates.
    tls: bool,
    /// For a node of a Redis Cluster ([`RedisCluster`](crate::RedisCluster)), the port of
    /// its cluster bus (chosen free, not Redis's default of the port + 10000, which another
    /// test's server may hold: CI saw a node fail to start on it).
    cluster: Option<u16>,
}

impl RedisServer {
    /// Starts `redis-server`.
    ///
    /// # Panics
    ///
    /// If the binary is missing (the message says what to install), or the server does
    /// not answer within 30 s (the message quotes its log).
    pub fn start() -> RedisServer {
        Self::start_with(false, false)
    }

    /// [`start`](Self::start) with `--cluster-enabled yes`: a node, not yet in a cluster.
    pub(crate) fn start_cluster_node() -> RedisServer {
        Self::start_with(false, true)
    }

    /// [`start`](Self::start), with TLS only on its port, on a certificate for 127.0.0.1
    /// signed by a CA of the kit's ([`ca_file`](Self::ca_file)). Needs `openssl(1)`.
    pub fn start_tls() -> RedisServer {
        Self::start_with(true, false)
    }

    fn start_with(tls: bool, cluster: bool) -> RedisServer {
        static SERVERS: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "latchkey-testkit-redis-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("testkit: cannot create {}: {e}", dir.display()));
        let mut server = RedisServer { dir, port: 0, child: None, tls, cluster: None };
        if tls {
            crate::certs::make(&server.dir);
        }
        // A port found free can be taken before the server binds it: try again on others.
        for attempt in 1.. {
            let ports = free_ports(2);
            server.port = ports[0];
            server.cluster = cluster.then_some(ports[1]);
            match server.try_launch() {
                Ok(()) => break,
                Err(log) if log.contains("Address already in use") && attempt < 5 => {
                    let _ = fs::remove_file(server.dir.join("nodes.conf"));
                }
                Err(log) => panic!("testkit: redis-server exited:\n{log}"),
            }
        }
        server
    }

    fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// Starts (or starts again) the server on its directory and port.
    ///
    /// # Panics
    ///
    /// If the server exits or does not answer within 30 s (the message quotes its log).
    fn launch(&mut self) {
        if let Err(log) = self.try_launch() {
            panic!("testkit: redis-server exited:\n{log}");
        }
    }

    /// [`launch`](Self::launch), returning the log's tail if the server exits at once.
    fn try_launch(&mut self) -> Result<(), String> {
        let mut command = Command::new("redis-server");
        let port = self.port.to_string();
        if self.tls {
            let file = |name: &str| self.dir.join(name).display().to_string();
            command.args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"]);
            command.args(["--tls-cert-file", &file("server.pem"), "--tls-key-file", &file("server.key")]);
            command.args(["--tls-ca-cert-file", &file("ca.pem")]);
        } else {
            command.args(["--port", &port]);
        }
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log())
            .args(["--daemonize", "no", "--protected-mode", "no"])
            // DEBUG SLEEP plays a server that stalls (tests of answers lost after a script ran).
            .args(["--enable-debug-command", "local"])
            .args(match self.cluster {
                Some(bus) => vec![
                    "--cluster-enabled".to_string(),
                    "yes".to_string(),
                    "--cluster-config-file".to_string(),
                    "nodes.conf".to_string(),
                    "--cluster-node-timeout".to_string(),
                    "5000".to_string(),
                    "--cluster-port".to_string(),
                    bus.to_string(),
                ],
                None => Vec::new(),
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match spawn(command) {
            Ok(child) => self.child = Some(child),
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!("testkit: cannot run redis-server: {e}; {INSTALL}"),
            Err(e) => panic!("testkit: cannot run redis-server: {e}"),
        }
        let start = Instant::now();
        while self.try_cli(&["PING"]).as_deref() != Some("PONG") {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("({status})\n{}", self.log_tail()));
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "testkit: redis-server did not answer in {TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log()).unwrap_or_default();
        log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let mut command = Command::new("redis-cli");
        if self.tls {
            command.arg("--tls").arg("--cacert").arg(self.ca_file());
        }
        let out = command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("testkit: cannot run redis-cli: {e}; {INSTALL}"));
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Runs `redis-cli` with `args` against the server and returns its output.
    ///
    /// # Panics
    ///
    /// If `redis-cli` fails.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|| panic!("testkit: redis-cli {args:?} failed"))
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate (PEM) that signed the server's certificate ([`start_tls`](Self::start_tls)).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A scope URL of database 0 (`rediss://` for a TLS server), with extra query
    /// parameters `query` (empty for none).
    pub fn url(&self, query: &str) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let base = format!("{scheme}://127.0.0.1:{}/0", self.port);
        if query.is_empty() {
            base
        } else {
            format!("{base}?{query}")
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same port: every connection
    /// ends, and with persistence off every key is gone.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's directory (log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
