//! `DATABASE_READ_URL` against a real streaming replica of the test server
//! (a base backup of it, started on a port of its own): the message list and
//! the dashboard's numbers are read there, a message by id on the primary.
//! Which server answered is shown by pausing the replica's replay, not by
//! timing: a message accepted meanwhile is found by id and not listed.
//!
//! The test server must allow physical replication from 127.0.0.1
//! (`scripts/services.sh` sees to it on a development cluster).

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::config::Config;
use common::test_support::{TestDatabase, TestRedis, admin_url, free_port, unique};
use gateway::test_support::RunningGateway;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use support::{API_KEY, send_body};

/// A hot standby of the test server, streaming from it, in a temporary
/// directory. Stopped, and its directory removed, on drop.
struct Replica {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// The test runs as root, which Postgres refuses: its commands run as
    /// `postgres`, which owns the directory.
    as_postgres: bool,
}

impl Replica {
    async fn start() -> Replica {
        let mut primary = PgConnection::connect(&admin_url())
            .await
            .expect("connect to the test server");
        let version: u32 = show(&mut primary, "server_version_num")
            .await
            .parse()
            .unwrap();
        // A hot standby needs at least the primary's values of these.
        let mut options = Vec::new();
        for name in [
            "max_connections",
            "max_worker_processes",
            "max_wal_senders",
            "max_prepared_transactions",
            "max_locks_per_transaction",
        ] {
            options.push(format!("-c {name}={}", show(&mut primary, name).await));
        }
        let _ = primary.close().await;
        // The server's own major version: a standby runs the primary's.
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{}/bin", version / 10000));
        assert!(
            bin.join("postgres").exists(),
            "PostgreSQL's server binaries of the test server's version are needed in {}",
            bin.display()
        );
        let replica = Replica {
            port: free_port(),
            dir: std::env::temp_dir().join(unique("replica")),
            bin,
            as_postgres: is_root(),
        };

        // The whole cluster, with `standby.signal` and `primary_conninfo` (-R).
        let backup = replica.run(
            "pg_basebackup",
            &[
                "-d",
                &admin_url(),
                "-D",
                path(&replica.dir),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
                "--no-manifest",
            ],
        );
        assert!(
            backup.status.success(),
            "pg_basebackup of the test server failed (it needs wal_level=replica and a \
             `host replication all 127.0.0.1/32 trust` line in its pg_hba.conf: run \
             scripts/services.sh): {}",
            String::from_utf8_lossy(&backup.stderr)
        );
        // Debian keeps the configuration outside the data directory, so the
        // backup has none: the replica gets its own (trusting local clients).
        let config = replica.dir.join("postgresql.conf");
        if !config.exists() {
            std::fs::write(&config, "").unwrap();
        }
        std::fs::write(
            replica.dir.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        std::fs::write(replica.dir.join("pg_ident.conf"), "").unwrap();
        if replica.as_postgres {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres", path(&replica.dir)])
                .status()
                .unwrap();
            assert!(chown.success(), "chown the replica's directory");
        }

        options.extend([
            format!("-c port={}", replica.port),
            "-c listen_addresses=127.0.0.1".to_owned(),
            format!("-c unix_socket_directories={}", replica.dir.display()),
            "-c hot_standby=on".to_owned(),
            "-c hot_standby_feedback=on".to_owned(),
            "-c fsync=off".to_owned(),
            "-c shared_buffers=16MB".to_owned(),
        ]);
        let log = replica.dir.join("replica.log");
        let started = replica.run(
            "pg_ctl",
            &[
                "-D",
                path(&replica.dir),
                "-l",
                path(&log),
                "-o",
                &options.join(" "),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            started.status.success(),
            "the replica did not start: {}{}",
            String::from_utf8_lossy(&started.stderr),
            replica.log()
        );
        let url = replica.url("postgres");
        eventually("the replica accepts connections", || async {
            let mut conn = PgConnection::connect(&url).await.ok()?;
            sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
                .fetch_one(&mut conn)
                .await
                .ok()
                .filter(|standby| *standby)
        })
        .await;
        replica
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs one of the server's commands, as `postgres` when the test is root.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .output()
            .expect("run a PostgreSQL command")
    }

    /// Stops it: `fast` disconnects its clients, `immediate` does not even
    /// shut down cleanly (the directory goes anyway).
    fn stop(&self, mode: &str) {
        self.run("pg_ctl", &["-D", path(&self.dir), "-m", mode, "-w", "stop"]);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("replica.log")).unwrap_or_default()
    }

    /// The one value `statement` answers on the replica, as text.
    async fn sql(&self, statement: &str) -> String {
        let mut conn = PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the replica");
        let answer: Option<String> = sqlx::query_scalar(statement)
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{statement} on the replica: {e}"));
        let _ = conn.close().await;
        answer.unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn show(conn: &mut PgConnection, setting: &str) -> String {
    sqlx::query_scalar(&format!("SHOW {setting}"))
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("SHOW {setting}: {e}"))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Polls `check` until it gives a value, for up to 60 s.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits a message; its id.
    async fn send(&self) -> String {
        let response = self
            .http
            .post(format!("{}/api/messages/send", self.base))
            .bearer_auth(API_KEY)
            .json(&send_body())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        body["message_id"].as_str().expect("an id").to_owned()
    }

    /// The ids of the first page of the list, or its status when not 200.
    async fn listed(&self) -> Result<Vec<String>, u16> {
        match self.get("/api/messages").await {
            (200, body) => Ok(body["messages"]
                .as_array()
                .expect("a list")
                .iter()
                .map(|m| m["message_id"].as_str().expect("an id").to_owned())
                .collect()),
            (status, _) => Err(status),
        }
    }

    /// The dashboard's count of the key's messages, or its status when not 200.
    async fn dashboard_total(&self) -> Result<i64, u16> {
        match self.get("/dashboard/data").await {
            (200, body) => Ok(body["total"].as_i64().expect("a total")),
            (status, _) => Err(status),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_the_dashboard_read_the_replica_and_a_message_by_id_the_primary() {
    let replica = Replica::start().await;
    // Created on the primary once the replica streams: it replicates.
    let (db, redis) = (TestDatabase::new().await, TestRedis::new());
    let replica_url = replica.url(&db.name);
    eventually("the test database on the replica", || async {
        let mut conn = PgConnection::connect(&replica_url).await.ok()?;
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM messages")
            .fetch_one(&mut conn)
            .await
            .ok()
    })
    .await;

    let vars: HashMap<String, String> = [
        ("APP_ENV", "testing"),
        ("LOG_LEVEL", "warn"),
        ("DATABASE_URL", db.url.as_str()),
        ("DATABASE_READ_URL", replica_url.as_str()),
        ("REDIS_URL", redis.url.as_str()),
        ("REDIS_PREFIX", redis.prefix.as_str()),
        ("API_KEYS", &format!("tester:{API_KEY}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = Config::from_map(&vars).unwrap();
    // As the binaries start: the read pool comes from the configuration.
    let (store, _) = common::startup::connect(&config).await.unwrap();
    assert!(store.read_pool().is_some(), "DATABASE_READ_URL is used");
    let gateway = RunningGateway::start(config, store).await;
    let client = Client {
        http: reqwest::Client::new(),
        base: gateway.base.clone(),
    };

    // (1) A message is there by id right after its 202, and soon listed.
    let first = client.send().await;
    let (status, body) = client.get(&format!("/api/messages/{first}")).await;
    assert_eq!(
        (status, body["message_id"].as_str()),
        (200, Some(first.as_str()))
    );
    eventually("the first message listed", || async {
        client.listed().await.ok()?.contains(&first).then_some(())
    })
    .await;
    assert_eq!(client.dashboard_total().await, Ok(1));

    // (2) With the replica's replay paused, a new message is on the primary
    // only: found by id, neither listed nor counted, until replay resumes.
    replica.sql("SELECT pg_wal_replay_pause()::text").await;
    eventually("replay paused", || async {
        let state = replica.sql("SELECT pg_get_wal_replay_pause_state()").await;
        (state == "paused").then_some(())
    })
    .await;
    let second = client.send().await;
    let (status, body) = client.get(&format!("/api/messages/{second}")).await;
    assert_eq!(
        (status, body["message_id"].as_str()),
        (200, Some(second.as_str())),
        "a message by id is read on the primary"
    );
    assert_eq!(
        client.listed().await,
        Ok(vec![first.clone()]),
        "the list is read on the replica"
    );
    assert_eq!(
        client.dashboard_total().await,
        Ok(1),
        "the dashboard is read on the replica"
    );
    let (status, health) = client.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["services"]["postgres_replica"], "ok");

    replica.sql("SELECT pg_wal_replay_resume()::text").await;
    eventually("the second message listed after replay resumes", || async {
        (client.listed().await.ok()? == vec![second.clone(), first.clone()]).then_some(())
    })
    .await;
    assert_eq!(client.dashboard_total().await, Ok(2));

    let metrics = gateway_metrics(&client).await;
    assert!(
        metrics.contains(r#"gateway_postgres_pool_connections{pool="replica",state="max"}"#),
        "the replica's pool has its gauges:\n{metrics}"
    );

    // (3) Without the replica, its readers answer 503 like any database
    // outage; a message by id and submitting are unaffected, and /health
    // reports the replica without failing.
    replica.stop("fast");
    assert_eq!(client.listed().await, Err(503));
    assert_eq!(client.dashboard_total().await, Err(503));
    let (status, _) = client.get(&format!("/api/messages/{second}")).await;
    assert_eq!(status, 200);
    let third = client.send().await;
    let (status, _) = client.get(&format!("/api/messages/{third}")).await;
    assert_eq!(status, 200);
    let (status, health) = client.get("/health").await;
    assert_eq!(status, 200, "the replica does not fail readiness: {health}");
    assert_eq!(health["services"]["postgres"], "ok");
    assert_eq!(health["services"]["postgres_replica"], "unavailable");
}

async fn gateway_metrics(client: &Client) -> String {
    client
        .http
        .get(format!("{}/metrics", client.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
