//! Redis servers of a test's own, the real engine started here: one that
//! speaks TLS only, a Redis Cluster, and a primary with a replica watched by
//! a sentinel. Each runs in a temporary directory on free loopback ports and
//! is killed, its files removed, on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, unique};

/// One `redis-server` process (a sentinel too) on a free loopback port.
pub struct RedisProcess {
    pub port: u16,
    /// The password `cli` gives (`requirepass` of the server).
    password: Option<String>,
    /// The CA `cli` trusts, for a server that speaks TLS only.
    tls_ca: Option<PathBuf>,
    child: Option<Child>,
}

impl RedisProcess {
    /// Starts `redis-server` in `dir` with the arguments `args(port)` gives,
    /// and waits until it listens. A free port can be taken before the server
    /// binds it: a few are tried.
    pub fn start(dir: &Path, args: impl Fn(u16) -> Vec<String>) -> RedisProcess {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let log = dir.join(format!("redis-{port}.log"));
            let mut child = Command::new("redis-server")
                .current_dir(dir)
                .args(args(port))
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                // A replica syncs at once, not after the default 5 s wait
                // for other replicas to share the transfer.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("start redis-server (is it installed?): {e}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut stderr = String::new();
                    if let Some(mut pipe) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                    }
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    failures.push(format!("{status}: {stderr}{log}"));
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return RedisProcess {
                        port,
                        password: None,
                        tls_ca: None,
                        child: Some(child),
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push("not listening after 10 s".into());
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-server did not start:\n{}", failures.join("\n"));
    }

    /// SIGKILL: the server is gone at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis-cli -p <port> <args>`, its output trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(
            self.port,
            self.password.as_deref(),
            self.tls_ca.as_deref(),
            args,
        )
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cli(port: u16, password: Option<&str>, tls_ca: Option<&Path>, args: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    if let Some(password) = password {
        command.env("REDISCLI_AUTH", password);
    }
    if let Some(ca) = tls_ca {
        command.args(["--tls", "--cacert"]).arg(ca);
    }
    let output = command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run redis-cli (is it installed?): {e}"));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Polls `ready` every 50 ms for up to `within`; panics naming `what`.
fn wait_for(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory of a test's own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).expect("a directory for the test's Redis");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `redis-server` that speaks TLS only (`--port 0`), with a CA and a
/// server certificate for `127.0.0.1` and `localhost` made here with the
/// `openssl` command.
pub struct TlsRedis {
    /// `rediss://127.0.0.1:<port>`.
    pub url: String,
    pub port: u16,
    /// The CA that signed the server's certificate (PEM).
    pub ca_file: PathBuf,
    /// A CA of its own that signed nothing this server presents.
    pub other_ca_file: PathBuf,
    // Fields drop in order: the server before its directory.
    _server: RedisProcess,
    _dir: TempDir,
}

impl TlsRedis {
    pub fn start() -> TlsRedis {
        let dir = TempDir::new("redis-tls");
        make_certificates(&dir.0);
        let server = RedisProcess::start(&dir.0, tls_only);
        TlsRedis {
            url: format!("rediss://127.0.0.1:{}", server.port),
            port: server.port,
            ca_file: dir.0.join("ca.pem"),
            other_ca_file: dir.0.join("other-ca.pem"),
            _server: server,
            _dir: dir,
        }
    }
}

/// The arguments of a server that speaks TLS only, on `port`, with the
/// certificates [`make_certificates`] wrote in its directory.
fn tls_only(port: u16) -> Vec<String> {
    let port = port.to_string();
    [
        "--port",
        "0",
        "--tls-port",
        &port,
        "--tls-cert-file",
        "server.pem",
        "--tls-key-file",
        "server.key",
        "--tls-ca-cert-file",
        "ca.pem",
        "--tls-auth-clients",
        "no",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// In `dir`: `ca.pem` (a CA made here), `server.pem` and `server.key` (a
/// certificate it signed for `127.0.0.1` and `localhost`), and
/// `other-ca.pem` (a CA that signed nothing).
fn make_certificates(dir: &Path) {
    make_ca(dir, "ca", "sent-gateway test CA");
    make_ca(dir, "other-ca", "another test CA");
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth, clientAuth\n\
             subjectAltName = IP:127.0.0.1, DNS:localhost\n\
             authorityKeyIdentifier = keyid\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
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
            "server.ext",
        ],
    );
}

/// A Redis Cluster: `primaries` primaries (at least 3, as Redis requires),
/// each with `replicas` replicas, made with `redis-cli --cluster create`.
pub struct RedisCluster {
    /// Every node, primaries first as `redis-cli` assigned them.
    pub nodes: Vec<RedisProcess>,
    /// With TLS (nodes that speak TLS only, the cluster bus too): the CA file.
    tls: Option<PathBuf>,
    _dir: TempDir,
}

impl RedisCluster {
    pub fn start(primaries: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_with(primaries, replicas, false)
    }

    /// [`RedisCluster::start`], where clients, replication and the cluster
    /// bus speak TLS with certificates of a CA made here.
    pub fn start_tls(primaries: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_with(primaries, replicas, true)
    }

    fn start_with(primaries: usize, replicas: usize, tls: bool) -> RedisCluster {
        let dir = TempDir::new("redis-cluster");
        if tls {
            make_certificates(&dir.0);
        }
        let ca = dir.0.join("ca.pem");
        let nodes: Vec<RedisProcess> = (0..primaries * (1 + replicas))
            .map(|_| {
                let mut node = RedisProcess::start(&dir.0, |port| {
                    let mut args = [
                        "--cluster-enabled",
                        "yes",
                        // A killed primary's replica takes over within seconds.
                        "--cluster-node-timeout",
                        "1000",
                    ]
                    .map(str::to_owned)
                    .to_vec();
                    args.extend(["--cluster-config-file".into(), format!("nodes-{port}.conf")]);
                    if tls {
                        args.extend(tls_only(port));
                        args.extend(
                            ["--tls-cluster", "yes", "--tls-replication", "yes"].map(str::to_owned),
                        );
                    } else {
                        args.extend(["--port".into(), port.to_string()]);
                    }
                    args
                });
                node.tls_ca = tls.then(|| ca.clone());
                node
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let mut create = Command::new("timeout");
        create.args(["60", "redis-cli"]);
        if tls {
            create.args(["--tls", "--cacert"]).arg(dir.0.join("ca.pem"));
        }
        let output = create
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster {
            nodes,
            tls: tls.then_some(ca),
            _dir: dir,
        };
        cluster.wait_until_ok();
        cluster
    }

    /// Every node's URL (the client's seed list): `redis://`, or
    /// `rediss://` on the TLS ports of a TLS cluster.
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.nodes
            .iter()
            .map(|node| format!("{scheme}://127.0.0.1:{}", node.port))
            .collect()
    }

    /// The CA file of a TLS cluster.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_deref()
    }

    /// Waits until every live node reports the cluster `ok` and every slot
    /// served, and every replica is in sync with its primary (after creation,
    /// or after a failover). A replica that never synced cannot take over.
    pub fn wait_until_ok(&self) {
        for node in self.nodes.iter().filter(|node| node.child.is_some()) {
            wait_for("the cluster's state ok", Duration::from_secs(30), || {
                let info = node.cli(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
            wait_for("replicas in sync", Duration::from_secs(30), || {
                let replication = node.cli(&["INFO", "replication"]);
                replication.contains("role:master") || replication.contains("master_link_status:up")
            });
        }
    }

    /// The node serving `key`'s slot as primary.
    pub fn primary_of(&self, key: &str) -> usize {
        let live = self.nodes.iter().find(|node| node.child.is_some());
        let slot = live.expect("a live node").cli(&["CLUSTER", "KEYSLOT", key]);
        let slot: u16 = slot.parse().expect("a slot number");
        self.nodes
            .iter()
            .position(|node| node.child.is_some() && serves(node, slot))
            .expect("a primary serves every slot")
    }

    /// How many keys each node holds (`DBSIZE`), by node.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|node| match node.child {
                Some(_) => node.cli(&["DBSIZE"]).parse().unwrap_or(0),
                None => 0,
            })
            .collect()
    }
}

/// Whether `node` serves `slot` as a primary: its own line of `CLUSTER
/// NODES` (marked `myself`) lists the slot ranges it serves.
fn serves(node: &RedisProcess, slot: u16) -> bool {
    node.cli(&["CLUSTER", "NODES"])
        .lines()
        .filter(|line| line.contains("myself") && line.contains("master"))
        .flat_map(|line| line.split_whitespace().skip(8).collect::<Vec<_>>())
        .any(|range| match range.split_once('-') {
            Some((a, b)) => match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                _ => false,
            },
            None => range.parse::<u16>() == Ok(slot),
        })
}

/// A primary, one replica, and one sentinel watching them under the name
/// [`RedisSentinel::MASTER`] (quorum 1, down after 1 s), all three requiring
/// the password [`RedisSentinel::PASSWORD`], as deployments of Sentinel do.
pub struct RedisSentinel {
    pub primary: RedisProcess,
    pub replica: RedisProcess,
    pub sentinel: RedisProcess,
    _dir: TempDir,
}

impl RedisSentinel {
    pub const MASTER: &str = "gatewaymaster";
    pub const PASSWORD: &str = "sentinel-test-password";

    pub fn start() -> RedisSentinel {
        let dir = TempDir::new("redis-sentinel");
        let data_args = |port: u16| {
            ["--port", &port.to_string()]
                .into_iter()
                .chain([
                    "--requirepass",
                    Self::PASSWORD,
                    "--masterauth",
                    Self::PASSWORD,
                ])
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let mut primary = RedisProcess::start(&dir.0, data_args);
        primary.password = Some(Self::PASSWORD.into());
        let mut replica = RedisProcess::start(&dir.0, |port| {
            let mut args = data_args(port);
            args.extend(["--replicaof".into(), "127.0.0.1".into()]);
            args.push(primary.port.to_string());
            args
        });
        replica.password = Some(Self::PASSWORD.into());
        wait_for("the replica in sync", Duration::from_secs(20), || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let mut sentinel = RedisProcess::start(&dir.0, |port| {
            // A sentinel rewrites its configuration file: one per port.
            let conf = dir.0.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\n\
                     requirepass {password}\n\
                     sentinel monitor {master} 127.0.0.1 {primary} 1\n\
                     sentinel auth-pass {master} {password}\n\
                     sentinel down-after-milliseconds {master} 1000\n\
                     sentinel failover-timeout {master} 5000\n",
                    master = RedisSentinel::MASTER,
                    password = RedisSentinel::PASSWORD,
                    primary = primary.port,
                ),
            )
            .unwrap();
            vec![conf.display().to_string(), "--sentinel".into()]
        });
        sentinel.password = Some(Self::PASSWORD.into());
        let started = RedisSentinel {
            primary,
            replica,
            sentinel,
            _dir: dir,
        };
        wait_for(
            "the sentinel to see the replica",
            Duration::from_secs(20),
            || {
                started
                    .sentinel
                    .cli(&["SENTINEL", "REPLICAS", RedisSentinel::MASTER])
                    .contains(&started.replica.port.to_string())
            },
        );
        started
    }

    /// `redis://:<password>@127.0.0.1:<port>` of the sentinel.
    pub fn sentinel_url(&self) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}",
            RedisSentinel::PASSWORD,
            self.sentinel.port
        )
    }

    /// The port of the primary the sentinel names now.
    pub fn current_primary(&self) -> u16 {
        let answer =
            self.sentinel
                .cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", RedisSentinel::MASTER]);
        answer
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .expect("the sentinel names a primary")
    }

    /// `SENTINEL FAILOVER`, then waits until the replica is the primary and
    /// the old primary has been turned into its replica (which the sentinel
    /// does a few seconds later: until then, the old one still takes writes).
    pub fn failover(&self) {
        let answer = self
            .sentinel
            .cli(&["SENTINEL", "FAILOVER", RedisSentinel::MASTER]);
        assert_eq!(answer, "OK", "SENTINEL FAILOVER");
        wait_for("the failover", Duration::from_secs(30), || {
            self.current_primary() == self.replica.port
                && self.replica.cli(&["ROLE"]).starts_with("master")
                && self.primary.cli(&["ROLE"]).starts_with("slave")
        });
    }
}

/// `<name>.pem` and `<name>.key` in `dir`: a self-signed CA certificate.
fn make_ca(dir: &std::path::Path, name: &str, common_name: &str) {
    let config = format!("{name}.cnf");
    std::fs::write(
        dir.join(&config),
        format!(
            "[req]\ndistinguished_name = dn\nx509_extensions = ca\nprompt = no\n\
             [dn]\nCN = {common_name}\n\
             [ca]\nbasicConstraints = critical, CA:TRUE\n\
             keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n"
        ),
    )
    .unwrap();
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-config",
            &config,
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
        ],
    );
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run openssl (is it installed?): {e}"));
    assert!(
        output.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}
