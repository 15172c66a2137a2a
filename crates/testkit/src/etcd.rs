//! Throwaway etcd clusters: members on loopback ports, in a temporary directory, killed and
//! removed when the cluster is dropped.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::counts::GrpcCounts;
use crate::http::{self, json_field, samples};
use crate::proxy::Proxy;
use crate::spawn::{free_ports, spawn};

/// How long a cluster (or a restarted member) may take to answer: a guard against hangs
/// only (a member once took more than 20 s to serve under the load of a full run).
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long any other request to a member may take.
const REQUEST: Duration = Duration::from_secs(5);
/// How many times `start` picks new ports when another process took one first.
const ATTEMPTS: usize = 5;
/// Lines of a member's log quoted in a panic message.
const LOG_TAIL: usize = 12;
/// The start of a cluster directory's name, before `{pid}-{serial}`.
const DIR_PREFIX: &str = "latchkey-testkit-etcd-";
/// What a cluster that is not healthy in time lacks.
const UNHEALTHY: &str = "no single leader, or not every running member answers /health";
/// What to tell a reader whose machine has no etcd.
const INSTALL: &str = "the tests need the etcd server on PATH: on Debian or Ubuntu, `apt-get install etcd-server`";

/// An etcd cluster of its own for one test or benchmark: `members` processes of the `etcd`
/// binary on free loopback ports, in a fresh directory under [`std::env::temp_dir`].
///
/// Members use short raft timers (25 ms heartbeat, 250 ms election timeout) and
/// `--unsafe-no-fsync`, so a cluster starts in well under a second and elects a new
/// leader within about half a second. Dropping the cluster kills every member (SIGKILL)
/// and removes the directory, also when a test panics; members also die with the test
/// process if it is killed (`PR_SET_PDEATHSIG`).
///
/// Methods that wait (`start`, `restart`, `leader`, `wait_healthy`) give up after 20 s
/// with a panic that quotes the members' logs.
///
/// # Examples
///
/// ```
/// use latchkey_testkit::EtcdCluster;
///
/// let mut cluster = EtcdCluster::start(3);
/// let url = cluster.url("locks"); // etcd://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/locks
/// assert!(url.starts_with("etcd://127.0.0.1:"));
/// let leader = cluster.leader();
/// cluster.kill(leader);
/// assert_ne!(cluster.leader(), leader); // elected by the other two
/// cluster.restart(leader);
/// assert_eq!(cluster.count_requests(), 0); // looking at a cluster costs it no request
/// ```
#[derive(Debug)]
pub struct EtcdCluster {
    dir: PathBuf,
    token: String,
    /// Whether members also serve clients over TLS, on ports of their own (`tls_ports`),
    /// with a certificate for 127.0.0.1 signed by a CA of the cluster's (`ca_file`).
    tls: bool,
    tls_ports: Vec<u16>,
    members: Vec<Member>,
}

/// One member: its ports, and its process while it runs.
#[derive(Debug)]
struct Member {
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// Why a cluster did not come up.
enum Stuck {
    /// A member exited; `port_taken` if it could not bind one of its ports.
    Exited { member: usize, port_taken: bool, status: String },
    /// The deadline passed, with this not done.
    Timeout(String),
}

impl EtcdCluster {
    /// Starts a cluster of `members` members (1 or 3, usually) and waits until it has a
    /// leader and every member answers.
    ///
    /// # Panics
    ///
    /// If `members` is 0, if there is no `etcd` binary on `PATH`, or if the cluster does
    /// not become healthy within 20 s; the message quotes the members' logs.
    pub fn start(members: usize) -> EtcdCluster {
        Self::start_with(members, false)
    }

    /// Like [`start`](Self::start), and each member also serves clients over TLS: see
    /// [`tls_url`](Self::tls_url) and [`ca_file`](Self::ca_file). Needs `openssl(1)`.
    pub fn start_tls(members: usize) -> EtcdCluster {
        Self::start_with(members, true)
    }

    fn start_with(members: usize, tls: bool) -> EtcdCluster {
        assert!(members > 0, "testkit: an etcd cluster needs at least one member");
        let mut attempt = 1;
        loop {
            let mut cluster = EtcdCluster::prepare(members);
            if tls {
                cluster.make_certificates();
            }
            // A new member first asks the others whether it joined already, and waits up to
            // 1 s for each one that listens but does not answer yet (etcd 3.4): members
            // started together wait for each other. One by one, they start at once.
            let started = (0..members)
                .try_for_each(|member| {
                    cluster.launch(member, "new");
                    cluster
                        .wait(&format!("m{member} does not serve its peers"), |c, probe| c.serves_peers(member, probe))
                })
                .and_then(|()| cluster.wait(UNHEALTHY, Self::healthy));
            match started {
                Ok(()) => return cluster,
                // Another process took a port between `free_ports` and etcd's bind.
                Err(Stuck::Exited { port_taken: true, .. }) if attempt < ATTEMPTS => attempt += 1,
                Err(stuck) => cluster.fail("did not start", stuck),
            }
        }
    }

    /// A new directory, free ports and a unique cluster token; no process yet.
    fn prepare(members: usize) -> EtcdCluster {
        static CLUSTERS: AtomicU64 = AtomicU64::new(0);
        let serial = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        sweep();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{pid}-{serial}"));
        let _ = fs::remove_dir_all(&dir); // left by an earlier process with the same pid
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("testkit: cannot create {}: {e}", dir.display()));
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let token = format!("latchkey-testkit-{pid}-{serial}-{nanos}");
        // A client, a peer and a TLS client port for each member.
        let ports = free_ports(3 * members);
        let tls_ports = ports.chunks(3).map(|three| three[2]).collect();
        let members =
            ports.chunks(3).map(|three| Member { client_port: three[0], peer_port: three[1], child: None }).collect();
        EtcdCluster { dir, token, tls: false, tls_ports, members }
    }

    /// Makes a CA and a server certificate for 127.0.0.1 in the cluster's directory.
    fn make_certificates(&mut self) {
        crate::certs::make(&self.dir);
        self.tls = true;
    }

    /// The CA certificate (PEM) that signed the members' TLS certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// An `etcds://` scope URL of the members' TLS ports, with a query string (`ca=…`).
    ///
    /// # Panics
    ///
    /// If the cluster was not started with [`start_tls`](Self::start_tls).
    pub fn tls_url(&self, prefix: &str, query: &str) -> String {
        assert!(self.tls, "testkit: tls_url of a cluster started without TLS");
        let endpoints: Vec<String> = self.tls_ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        etcd_url(&endpoints, prefix, query).replacen("etcd://", "etcds://", 1)
    }

    /// Starts the process of `member`; `state` is `new` or `existing`.
    fn launch(&mut self, member: usize, state: &str) {
        let name = format!("m{member}");
        let initial_cluster = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("m{i}=http://127.0.0.1:{}", m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let (client, peer) = (self.members[member].client_port, self.members[member].peer_port);
        let log = self.log_path(member);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("testkit: cannot open {}: {e}", log.display()));
        let mut command = Command::new("etcd");
        command
            .args(["--name", &name, "--data-dir"])
            .arg(self.dir.join(&name))
            .args(["--listen-client-urls", &self.client_urls(member)])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &initial_cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "25", "--election-timeout", "250", "--unsafe-no-fsync"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("testkit: cannot duplicate a log file handle"))
            .stderr(log);
        // etcd reads ETCD_* variables as flags: the caller's must not change the cluster.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(key);
            }
        }
        if self.tls {
            command.arg("--cert-file").arg(self.dir.join("server.pem"));
            command.arg("--key-file").arg(self.dir.join("server.key"));
        }
        match spawn(command) {
            Ok(child) => self.members[member].child = Some(child),
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!("testkit: cannot run etcd: {e}; {INSTALL}"),
            Err(e) => panic!("testkit: cannot run etcd: {e}"),
        }
    }

    /// The URLs `member` serves clients on: plain HTTP (what the kit itself probes), and
    /// TLS too for a cluster started with [`start_tls`](Self::start_tls).
    fn client_urls(&self, member: usize) -> String {
        let plain = format!("http://127.0.0.1:{}", self.members[member].client_port);
        match self.tls {
            true => format!("{plain},https://127.0.0.1:{}", self.tls_ports[member]),
            false => plain,
        }
    }

    /// The number of members, running or not.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// The client endpoints of all members, `127.0.0.1:port`, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|m| self.endpoint(m)).collect()
    }

    /// The client endpoint of `member`, `127.0.0.1:port`.
    pub fn endpoint(&self, member: usize) -> String {
        format!("127.0.0.1:{}", self.members[member].client_port)
    }

    /// The scope URL of this cluster with key prefix `prefix`:
    /// `etcd://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        etcd_url(&self.endpoints(), prefix, "")
    }

    /// Like [`url`](Self::url), with a query string (`ttl=5s`) after a `?`.
    pub fn url_with(&self, prefix: &str, query: &str) -> String {
        etcd_url(&self.endpoints(), prefix, query)
    }

    /// A scope URL whose endpoints are proxies, one in front of each member, in member
    /// order: [`Proxy::cut`] on all of them cuts the URL's clients off from the cluster while
    /// other clients still reach it. Add a query string with `format!("{url}?ttl=5s")`.
    ///
    /// # Panics
    ///
    /// If a proxy cannot bind a loopback port.
    pub fn proxied_url(&self, prefix: &str) -> (String, Vec<Proxy>) {
        let proxies: Vec<Proxy> = (0..self.members.len())
            .map(|m| Proxy::start(self.endpoint(m)).expect("testkit: cannot start a proxy"))
            .collect();
        let endpoints: Vec<String> = proxies.iter().map(|p| p.addr().to_string()).collect();
        (etcd_url(&endpoints, prefix, ""), proxies)
    }

    /// The process id of `member`, if it runs.
    pub fn pid(&self, member: usize) -> Option<u32> {
        self.members[member].child.as_ref().map(Child::id)
    }

    /// The directory that holds the members' data and logs (`m0.log`, ...).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index of the current leader, once exactly one running member says it leads and
    /// every running member sees a leader (a moment after a leader dies, none does).
    ///
    /// # Panics
    ///
    /// If there is no such leader within 20 s.
    pub fn leader(&self) -> usize {
        let began = Instant::now();
        loop {
            if let Some(leader) = self.find_leader(probe(began)) {
                return leader;
            }
            if began.elapsed() > TIMEOUT {
                self.fail("has no leader", Stuck::Timeout("no single leader".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills `member` (SIGKILL) and reaps it; nothing if it does not run.
    pub fn kill(&mut self, member: usize) {
        if let Some(mut child) = self.members[member].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed `member` again, with its data directory and ports, and waits until
    /// the cluster is healthy.
    ///
    /// # Panics
    ///
    /// If the member runs, or if the cluster is not healthy within 20 s.
    pub fn restart(&mut self, member: usize) {
        assert!(self.members[member].child.is_none(), "testkit: etcd member {member} runs; kill it first");
        self.launch(member, "existing");
        if let Err(stuck) = self.wait(UNHEALTHY, Self::healthy) {
            self.fail("did not take its member back", stuck);
        }
    }

    /// Waits until the cluster has a leader and every running member answers `/health`.
    ///
    /// # Panics
    ///
    /// If that does not happen within 20 s.
    pub fn wait_healthy(&self) {
        let began = Instant::now();
        while !self.healthy(probe(began)) {
            if began.elapsed() > TIMEOUT {
                self.fail("is not healthy", Stuck::Timeout(UNHEALTHY.into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Compacts the key space at the current revision, physically (the call returns once
    /// the leader has removed the old revisions), and returns that revision: a watch that
    /// starts before it is then cancelled as compacted. Costs two unary requests on the
    /// leader (`Maintenance/Status` for the revision, `KV/Compact`).
    ///
    /// # Panics
    ///
    /// If etcd refuses, or if there is no leader within 20 s.
    pub fn compact(&self) -> i64 {
        let port = self.members[self.leader()].client_port;
        let (_, status) = http::request(port, "POST", "/v3/maintenance/status", "{}", REQUEST)
            .unwrap_or_else(|e| panic!("testkit: etcd status request failed: {e}"));
        let revision: i64 = json_field(&status, "revision")
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("testkit: no revision in etcd's status: {status}"));
        let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        match http::request(port, "POST", "/v3/kv/compaction", &body, REQUEST) {
            Ok((200, _)) => revision,
            // Compacted at this very revision already: nothing was written since.
            Ok((_, answer)) if answer.contains("required revision has been compacted") => revision,
            Ok((code, answer)) => panic!("testkit: etcd refused to compact at {revision}: {code} {answer}"),
            Err(e) => panic!("testkit: etcd compaction request failed: {e}"),
        }
    }

    /// The unary gRPC calls the running members have started, summed:
    /// [`GrpcCounts::unary`]. Streams (`Watch`, `LeaseKeepAlive`) and their messages are not
    /// counted; the kit's own observations (`/health`, `/metrics`) are not gRPC and do not
    /// count either, but [`compact`](Self::compact) does. A killed member's count is lost,
    /// and a restarted member counts from 0 again.
    ///
    /// # Panics
    ///
    /// If a running member does not serve `/metrics`.
    pub fn count_requests(&self) -> u64 {
        self.grpc_counts().unary
    }

    /// The gRPC calls the running members have started, from their Prometheus metrics
    /// (`grpc_server_started_total`, `grpc_server_msg_received_total`), summed over members;
    /// what [`count_requests`](Self::count_requests) says of killed members holds here too.
    ///
    /// # Panics
    ///
    /// If a running member does not serve `/metrics`.
    pub fn grpc_counts(&self) -> GrpcCounts {
        let mut counts = GrpcCounts::default();
        for member in self.running() {
            let text = self
                .metrics(member, REQUEST)
                .unwrap_or_else(|e| panic!("testkit: etcd member {member}: /metrics: {e}"));
            counts.add(&text);
        }
        counts
    }

    /// The members that run.
    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&m| self.members[m].child.is_some())
    }

    /// `member`'s `/metrics` page.
    fn metrics(&self, member: usize, timeout: Duration) -> io::Result<String> {
        match http::request(self.members[member].client_port, "GET", "/metrics", "", timeout)? {
            (200, text) => Ok(text),
            (code, _) => Err(io::Error::other(format!("HTTP status {code}"))),
        }
    }

    /// The leader, if exactly one running member leads and all running members see one.
    fn find_leader(&self, probe: Duration) -> Option<usize> {
        let mut leaders = Vec::new();
        for member in self.running() {
            let text = self.metrics(member, probe).ok()?;
            let gauge = |name: &str| samples(&text).find(|s| s.name == name).map(|s| s.value);
            if gauge("etcd_server_has_leader") != Some(1.0) {
                return None;
            }
            if gauge("etcd_server_is_leader") == Some(1.0) {
                leaders.push(member);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// Whether every running member answers `/health` and there is one leader.
    fn healthy(&self, probe: Duration) -> bool {
        self.running().all(|m| {
            matches!(http::request(self.members[m].client_port, "GET", "/health", "", probe),
                     Ok((200, body)) if body.contains(r#""health":"true""#))
        }) && self.find_leader(probe).is_some()
    }

    /// Waits until `ready` (given a probe timeout) holds, watching for members that exit;
    /// `stuck` says what did not happen, at the timeout.
    fn wait(&mut self, stuck: &str, ready: impl Fn(&Self, Duration) -> bool) -> Result<(), Stuck> {
        let began = Instant::now();
        loop {
            for member in 0..self.members.len() {
                let Some(child) = self.members[member].child.as_mut() else { continue };
                if let Ok(Some(status)) = child.try_wait() {
                    self.members[member].child = None;
                    let log = fs::read_to_string(self.log_path(member)).unwrap_or_default();
                    let port_taken = log.contains("address already in use");
                    return Err(Stuck::Exited { member, port_taken, status: status.to_string() });
                }
            }
            if ready(self, probe(began)) {
                return Ok(());
            }
            if began.elapsed() > TIMEOUT {
                return Err(Stuck::Timeout(stuck.into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether `member` answers HTTP on its peer port.
    fn serves_peers(&self, member: usize, probe: Duration) -> bool {
        http::request(self.members[member].peer_port, "GET", "/members", "", probe).is_ok()
    }

    /// Panics with what went wrong and the tails of the relevant members' logs.
    fn fail(&self, what: &str, stuck: Stuck) -> ! {
        let n = self.members.len();
        let (why, members) = match stuck {
            Stuck::Exited { member, status, .. } => (format!("member m{member} exited ({status})"), vec![member]),
            Stuck::Timeout(why) => (format!("{why} after {TIMEOUT:?}"), (0..n).collect()),
        };
        let mut message = format!("testkit: etcd cluster of {n} member(s) {what}: {why}; {INSTALL}");
        for member in members {
            let path = self.log_path(member);
            let Ok(log) = fs::read_to_string(&path) else { continue }; // not started
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
            message.push_str(&format!("\n--- last lines of {}:\n{tail}", path.display()));
        }
        panic!("{message}")
    }

    /// Where `member` writes its log.
    fn log_path(&self, member: usize) -> PathBuf {
        self.dir.join(format!("m{member}.log"))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in 0..self.members.len() {
            self.kill(member);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Removes the cluster directories of test processes that died without cleaning up (killed
/// by a test runner's timeout, say), whose members died with them.
fn sweep() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// How long a probe of a member (`/health`, `/metrics`) may take in a wait that began at
/// `began`: short at first, then longer, in case the machine is slow. A starting member
/// accepts connections a while before it serves them, and never answers on a connection
/// it accepted that early: a new probe on a new connection gets the answer.
fn probe(began: Instant) -> Duration {
    (Duration::from_millis(50) + began.elapsed() / 8).min(Duration::from_secs(2))
}

/// `etcd://e1,e2/prefix[?query]`.
fn etcd_url(endpoints: &[String], prefix: &str, query: &str) -> String {
    let mut url = format!("etcd://{}/{}", endpoints.join(","), prefix.trim_start_matches('/'));
    if !query.is_empty() {
        url.push('?');
        url.push_str(query.trim_start_matches('?'));
    }
    url
}
