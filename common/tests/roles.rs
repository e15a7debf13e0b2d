//! The database roles, against the real local Postgres: the dashboard role
//! reads the documented views and no table, the migrations run as a role
//! that is not a superuser (as the compose stack runs them), and the
//! Postgres init scripts of `deploy/postgres/` quote the passwords they are
//! given, whatever characters those hold.
//!
//! Roles belong to the whole cluster, not to a test's database: every role
//! a test makes has a name of its own (process, counter, ULID) and is dropped
//! when the test ends, passed or failed. `dashboard_reader`, the group the
//! migrations grant, is shared by every database and only ever created.

use std::collections::BTreeSet;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::store::MIGRATOR;
use common::test_support::{Cleanup, TestDatabase, admin_url, unique};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The views of `migrations/20261125000003_dashboard_views.sql` (and
/// `forwarding_summary`, 20261211200000), which the
/// README documents for Grafana, Metabase and psql: all that
/// `dashboard_reader` may read.
const VIEWS: [&str; 6] = [
    "message_status_counts",
    "message_throughput_per_minute",
    "delivery_latency_hourly",
    "failure_reasons",
    "recent_failures",
    "forwarding_summary",
];

/// The tables with every client's data that dashboards must not read.
const SENSITIVE_TABLES: [&str; 3] = ["messages", "message_events", "webhook_inbox"];

/// A password with everything that breaks SQL pasted into a string: quotes,
/// a statement separator, a backslash, a psql variable, a dollar quote.
fn awkward_password(injected_role: &str) -> String {
    format!(r#"it's; CREATE ROLE {injected_role}; -- \' " :'x' $$ end"#)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A name no other test, process or run uses.
fn admin_options() -> PgConnectOptions {
    admin_url().parse().expect("admin url")
}

async fn admin() -> PgConnection {
    PgConnection::connect(&admin_url())
        .await
        .expect("connect to Postgres for tests")
}

/// `dashboard_reader` exists (the compose init script creates it before the
/// migrations run, as a non-superuser cannot). Tests running at once may
/// race to create it: losing is fine.
async fn ensure_dashboard_reader(admin: &mut PgConnection) {
    let result = admin
        .execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dashboard_reader') THEN
                 CREATE ROLE dashboard_reader NOLOGIN;
               END IF;
             END $$",
        )
        .await;
    if let Err(e) = result {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dashboard_reader')",
        )
        .fetch_one(&mut *admin)
        .await
        .unwrap();
        assert!(exists, "create dashboard_reader: {e}");
    }
}

/// Runs one of `deploy/postgres/`'s init scripts as the Postgres image's
/// entrypoint does (`POSTGRES_USER`, `POSTGRES_DB`, the script's variables),
/// pointed at the test server.
fn run_init_script(script: &str, vars: &[(&str, &str)]) {
    let admin = url::Url::parse(&admin_url()).expect("admin url");
    let mut command = Command::new("sh");
    command
        .arg(format!("{ROOT}/deploy/postgres/{script}"))
        .env("PGHOST", admin.host_str().unwrap_or("127.0.0.1"))
        .env("PGPORT", admin.port().unwrap_or(5432).to_string())
        .env("POSTGRES_USER", admin.username())
        .env("POSTGRES_DB", admin.path().trim_start_matches('/'))
        .env_remove("PGPASSWORD")
        .env_remove("PGDATABASE")
        .env_remove("PGUSER");
    if let Some(password) = admin.password() {
        command.env("PGPASSWORD", password);
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command.output().expect("run sh");
    assert!(
        output.status.success(),
        "{script} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether `password` is the one Postgres stored for `role`: the check a
/// SCRAM-SHA-256 login makes (RFC 5802: StoredKey = H(HMAC(SaltedPassword,
/// "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key")), done
/// here because the test server trusts local connections whatever password
/// they bring.
fn scram_verifies(stored: &str, password: &str) -> bool {
    type HmacSha256 = Hmac<Sha256>;
    let hmac = |key: &[u8], data: &[u8]| {
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    };
    let rest = stored
        .strip_prefix("SCRAM-SHA-256$")
        .unwrap_or_else(|| panic!("not a SCRAM-SHA-256 verifier: {stored}"));
    let (params, keys) = rest.split_once('$').unwrap();
    let (iterations, salt) = params.split_once(':').unwrap();
    let (stored_key, server_key) = keys.split_once(':').unwrap();
    let iterations: u32 = iterations.parse().unwrap();
    let salt = BASE64.decode(salt).unwrap();
    // PBKDF2-HMAC-SHA-256, one block (Hi() of RFC 5802).
    let mut block = salt.clone();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password.as_bytes(), &block);
    let mut salted = u.clone();
    for _ in 1..iterations {
        u = hmac(password.as_bytes(), &u);
        for (s, x) in salted.iter_mut().zip(&u) {
            *s ^= x;
        }
    }
    let client_key = hmac(&salted, b"Client Key");
    let expected_stored = Sha256::digest(&client_key);
    let expected_server = hmac(&salted, b"Server Key");
    BASE64.encode(expected_stored) == stored_key && BASE64.encode(expected_server) == server_key
}

async fn stored_password(admin: &mut PgConnection, role: &str) -> String {
    sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(role)
        .fetch_one(&mut *admin)
        .await
        .unwrap_or_else(|e| panic!("role {role}: {e}"))
}

async fn role_exists(admin: &mut PgConnection, role: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&mut *admin)
        .await
        .unwrap()
}

/// Connects to `database` as `role` (with its password, which the test
/// server does not ask for but a real one does).
async fn connect_as(role: &str, password: &str, database: &str) -> PgConnection {
    admin_options()
        .username(role)
        .password(password)
        .database(database)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect as {role} to {database}: {e}"))
}

/// The relations a Grafana panel's SQL reads (after FROM or JOIN).
fn relations_read_by(sql: &str) -> BTreeSet<String> {
    let from = regex::Regex::new(r"(?i)\b(?:from|join)\s+([a-z_][a-z0-9_.]*)").unwrap();
    from.captures_iter(sql)
        .map(|c| c[1].to_lowercase())
        .collect()
}

/// Every rawSql of the provisioned dashboard, with Grafana's time macro
/// expanded as Grafana would.
fn grafana_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/sent-gateway.json")).unwrap();
    let time_filter = regex::Regex::new(r"\$__timeFilter\((\w+)\)").unwrap();
    let mut queries = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(sql) = target["rawSql"].as_str() {
                let sql = time_filter.replace_all(sql, "$1 > now() - interval '6 hours'");
                queries.push((
                    panel["title"].as_str().unwrap_or("?").to_owned(),
                    sql.into_owned(),
                ));
            }
        }
    }
    queries
}

/// A failed message, so that the views have a row to show and the tables one
/// to hide.
async fn insert_failed_message(conn: &mut PgConnection) {
    sqlx::query(
        "INSERT INTO messages (id, client, phone_number, template_name, parameters, callback_url,
                               status, last_error_code, last_error, failed_at, accepted_at)
         VALUES ('01JROLESTEST0000000000000', 'acme', '+14155550123', 'welcome',
                 '{\"name\": \"Ada\"}', 'https://acme.example/cb', 'failed',
                 'carrier_rejected', 'carrier rejected the message', now(), now())",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO message_events (message_id, status, source) VALUES ('01JROLESTEST0000000000000', 'failed', 'sent')",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// As a login member of `dashboard_reader` connected to `database`: every
/// table is refused, every documented view and every Grafana query answers.
async fn assert_dashboard_reads_views_only(dashboard: &mut PgConnection, owner: &mut PgConnection) {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut *owner)
    .await
    .unwrap();
    for sensitive in SENSITIVE_TABLES {
        assert!(
            tables.iter().any(|t| t == sensitive),
            "{sensitive} in {tables:?}"
        );
    }
    for table in &tables {
        let error = sqlx::query(&format!(r#"SELECT * FROM "{table}" LIMIT 1"#))
            .fetch_all(&mut *dashboard)
            .await
            .expect_err(&format!("the dashboard role read table {table}"));
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(
            code.as_deref(),
            Some("42501"),
            "{table}: permission denied expected, got {error}"
        );
    }

    let views: BTreeSet<String> =
        sqlx::query_scalar("SELECT viewname::text FROM pg_views WHERE schemaname = 'public'")
            .fetch_all(&mut *owner)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let documented: BTreeSet<String> = VIEWS.iter().map(|v| v.to_string()).collect();
    assert_eq!(
        views, documented,
        "every view of the schema is documented for dashboards and granted (or neither)"
    );
    let readme = read("README.md");
    for view in VIEWS {
        assert!(readme.contains(view), "README documents {view}");
        let rows = sqlx::query(&format!("SELECT * FROM {view}"))
            .fetch_all(&mut *dashboard)
            .await
            .unwrap_or_else(|e| panic!("the dashboard role reads {view}: {e}"));
        if view == "recent_failures" || view == "failure_reasons" {
            assert!(!rows.is_empty(), "{view} shows the failed message");
        }
    }

    let queries = grafana_queries();
    assert!(queries.len() >= 5, "{queries:?}");
    for (title, sql) in queries {
        let read = relations_read_by(&sql);
        assert!(!read.is_empty(), "panel {title}: no relation in {sql}");
        for relation in &read {
            assert!(
                documented.contains(relation),
                "panel {title} reads {relation}, which is not a dashboard view"
            );
        }
        sqlx::query(&sql)
            .fetch_all(&mut *dashboard)
            .await
            .unwrap_or_else(|e| panic!("panel {title}: {e}\n{sql}"));
    }

    // Nor can it make a table of its own in the schema.
    let create = sqlx::query("CREATE TABLE dashboard_probe (a int)")
        .execute(&mut *dashboard)
        .await;
    assert!(create.is_err(), "the dashboard role created a table");

    // The views read the tables with their owner's rights, which must include
    // the tables; those that leave rows out are security barriers.
    let owners: Vec<(String, bool, Option<Vec<String>>)> = sqlx::query_as(
        "SELECT c.relname::text, has_table_privilege(c.relowner, 'messages', 'SELECT'), c.reloptions
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind = 'v'",
    )
    .fetch_all(&mut *owner)
    .await
    .unwrap();
    for (view, owner_reads, options) in owners {
        assert!(owner_reads, "{view}'s owner cannot read messages");
        if [
            "delivery_latency_hourly",
            "failure_reasons",
            "recent_failures",
        ]
        .contains(&view.as_str())
        {
            assert!(
                options
                    .unwrap_or_default()
                    .iter()
                    .any(|o| o == "security_barrier=true"),
                "{view} is a security barrier"
            );
        }
    }
}

/// As in development and the tests (migrations run by the superuser): a login
/// role in `dashboard_reader`, as Grafana's is, reads the views only.
#[tokio::test]
async fn the_dashboard_role_reads_the_documented_views_and_no_table() {
    let db = TestDatabase::new().await;
    let mut cleanup = Cleanup::default();
    let mut admin = admin().await;
    let role = unique("gwtest_dash");
    let password = unique("pw");
    cleanup.roles.push(role.clone());
    admin
        .execute(
            format!(r#"CREATE ROLE "{role}" LOGIN PASSWORD '{password}' IN ROLE dashboard_reader"#)
                .as_str(),
        )
        .await
        .unwrap();
    let mut owner = PgConnection::connect(&db.url).await.unwrap();
    insert_failed_message(&mut owner).await;
    let mut dashboard = connect_as(&role, &password, &db.name).await;
    assert_dashboard_reads_views_only(&mut dashboard, &mut owner).await;
    dashboard.close().await.unwrap();
    owner.close().await.unwrap();
}

/// As the compose stack does it: the superuser only runs the init scripts,
/// which create the application's role (not a superuser) with its database
/// and Grafana's role; the migrations run as the application's role, which
/// then owns every table and view; the dashboard role reads the views only.
#[tokio::test]
async fn migrations_run_as_the_app_role_and_dashboards_read_views_only() {
    let mut cleanup = Cleanup::default();
    let mut admin = admin().await;
    ensure_dashboard_reader(&mut admin).await;
    let app_role = unique("gwtest_app");
    let app_db = unique("gwtest_appdb");
    let dash_role = unique("gwtest_dash");
    let injected = unique("gwtest_injected");
    let app_password = awkward_password(&injected);
    let dash_password = awkward_password(&injected);
    cleanup.databases.push(app_db.clone());
    cleanup
        .roles
        .extend([app_role.clone(), dash_role.clone(), injected.clone()]);

    run_init_script(
        "init-app-role.sh",
        &[
            ("GATEWAY_DB_USER", &app_role),
            ("GATEWAY_DB_NAME", &app_db),
            ("GATEWAY_DB_PASSWORD", &app_password),
        ],
    );
    run_init_script(
        "init-dashboard-role.sh",
        &[
            ("DASHBOARD_USER", &dash_role),
            ("DASHBOARD_PASSWORD", &dash_password),
        ],
    );

    let (superuser, create_role, create_db): (bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = $1",
    )
    .bind(&app_role)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(
        !superuser && !create_role && !create_db,
        "the app role is an ordinary role"
    );

    // The migrations, as `gateway migrate` runs them, connected as the app role.
    let mut app = connect_as(&app_role, &app_password, &app_db).await;
    MIGRATOR
        .run(&mut app)
        .await
        .expect("migrations run as the app role");

    let not_owned: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'S')
            AND pg_get_userbyid(c.relowner) <> current_user",
    )
    .fetch_all(&mut app)
    .await
    .unwrap();
    assert!(
        not_owned.is_empty(),
        "not owned by the app role: {not_owned:?}"
    );
    let schema_owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'public'",
    )
    .fetch_one(&mut app)
    .await
    .unwrap();
    assert!(
        schema_owner == app_role || schema_owner == "pg_database_owner",
        "public schema owned by {schema_owner}"
    );

    insert_failed_message(&mut app).await;
    let mut dashboard = connect_as(&dash_role, &dash_password, &app_db).await;
    assert_dashboard_reads_views_only(&mut dashboard, &mut app).await;
    let read_only: String = sqlx::query_scalar("SHOW default_transaction_read_only")
        .fetch_one(&mut dashboard)
        .await
        .unwrap();
    assert_eq!(read_only, "on");
    dashboard.close().await.unwrap();
    app.close().await.unwrap();
    assert!(
        !role_exists(&mut admin, &injected).await,
        "a password ran as SQL"
    );
}

/// The init scripts put the password into SQL quoted: a password with a
/// quote, a semicolon, a backslash and a psql variable in it is stored as
/// given (the role logs in with it and with nothing else) and never runs.
#[tokio::test]
async fn the_init_scripts_store_any_password_as_given() {
    let mut cleanup = Cleanup::default();
    let mut admin = admin().await;
    ensure_dashboard_reader(&mut admin).await;
    let dash_role = unique("gwtest_dash");
    let app_role = unique("gwtest_app");
    let app_db = unique("gwtest_appdb");
    let injected = unique("gwtest_injected");
    let password = awkward_password(&injected);
    cleanup.databases.push(app_db.clone());
    cleanup
        .roles
        .extend([dash_role.clone(), app_role.clone(), injected.clone()]);

    run_init_script(
        "init-dashboard-role.sh",
        &[
            ("DASHBOARD_USER", &dash_role),
            ("DASHBOARD_PASSWORD", &password),
        ],
    );
    run_init_script(
        "init-app-role.sh",
        &[
            ("GATEWAY_DB_USER", &app_role),
            ("GATEWAY_DB_NAME", &app_db),
            ("GATEWAY_DB_PASSWORD", &password),
        ],
    );
    assert!(
        !role_exists(&mut admin, &injected).await,
        "the password ran as SQL"
    );
    for role in [&dash_role, &app_role] {
        let stored = stored_password(&mut admin, role).await;
        assert!(
            scram_verifies(&stored, &password),
            "{role} logs in with the password as given"
        );
        assert!(
            !scram_verifies(&stored, "it's"),
            "{role}: only with that password"
        );
        let mut conn = connect_as(role, &password, &app_db).await;
        let user: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(&user, role);
        conn.close().await.unwrap();
    }
    let (can_login, reader): (bool, bool) = sqlx::query_as(
        "SELECT rolcanlogin, pg_has_role(oid, 'dashboard_reader', 'MEMBER') FROM pg_roles WHERE rolname = $1",
    )
    .bind(&dash_role)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(
        can_login && reader,
        "{dash_role} logs in as a dashboard_reader"
    );
}

#[test]
fn the_scram_check_is_the_one_postgres_makes() {
    // RFC 7677's example: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
    let stored = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
                  WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
                  wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
    assert!(scram_verifies(stored, "pencil"));
    assert!(!scram_verifies(stored, "pencil "));
}
