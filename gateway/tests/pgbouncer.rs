//! The gateway behind Debian's PgBouncer in session pooling, as most managed
//! Postgres offers it: nothing session-level is asked at connect time (the
//! planner setting is the database's), and the migrations and LISTEN go to
//! Postgres itself (`DATABASE_DIRECT_URL`).

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use common::config::Config;
use common::store::Store;
use common::test_support::{TestDatabase, TestRedis, free_port, unique};
use gateway::test_support::RunningGateway;
use serde_json::Value;
use support::{API_KEY, send_body};

/// A PgBouncer in front of the local Postgres, on a port of its own.
struct PgBouncer {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl PgBouncer {
    fn start() -> PgBouncer {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("pgbouncer is needed (apt-get install pgbouncer; scripts/test.sh does)");
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("pgbouncer"));
        std::fs::create_dir_all(&dir).unwrap();
        // PgBouncer refuses to run as root: it switches to `postgres`, which
        // must read its files and write its log there.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host=127.0.0.1 port=5432\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = session\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 max_client_conn = 200\ndefault_pool_size = 20\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let mut command = Command::new(binary);
        if is_root() {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .spawn()
            .expect("start pgbouncer");
        let bouncer = PgBouncer { port, dir, child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return bouncer;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pgbouncer did not listen: {}", bouncer.log());
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[tokio::test]
async fn the_gateway_runs_behind_pgbouncer() {
    let bouncer = PgBouncer::start();
    let (db, redis) = (TestDatabase::new().await, TestRedis::new());
    let vars: HashMap<String, String> = [
        ("APP_ENV", "testing"),
        ("LOG_LEVEL", "warn"),
        ("DATABASE_URL", bouncer.url(&db.name).as_str()),
        ("DATABASE_DIRECT_URL", db.url.as_str()),
        ("REDIS_URL", redis.url.as_str()),
        ("REDIS_PREFIX", redis.prefix.as_str()),
        ("API_KEYS", &format!("tester:{API_KEY}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = Config::from_map(&vars).unwrap();
    // Start-up as the binaries do it: create and migrate through Postgres,
    // then serve through the pooler.
    let (store, _) = common::startup::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\npgbouncer: {}", bouncer.log()));
    let plan: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(plan, "force_custom_plan", "the database's own setting");

    let gateway = RunningGateway::start(config, store).await;
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(gateway.url("/api/messages/send"))
        .bearer_auth(API_KEY)
        .json(&send_body())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["message_id"].as_str().expect("accepted");
    let read = http
        .get(gateway.url(&format!("/api/messages/{id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
}

#[tokio::test]
async fn listen_goes_to_postgres_itself() {
    let bouncer = PgBouncer::start();
    let db = TestDatabase::new().await;
    let store = Store::connect_lazy(&bouncer.url(&db.name), 4)
        .unwrap()
        .with_direct_url(Some(&db.url));
    let mut listener = store.listener().await.unwrap();
    listener.listen("pgbouncer_test").await.unwrap();
    sqlx::query("NOTIFY pgbouncer_test, 'hello'")
        .execute(store.pool())
        .await
        .unwrap();
    let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("the notification arrives")
        .unwrap();
    assert_eq!(notification.payload(), "hello");
}
