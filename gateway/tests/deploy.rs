//! The deployment files, checked without a Docker engine: the compose file's
//! structure; that it takes every secret from the environment, with no
//! default, while `deploy/demo.env` runs the local demo; that only the
//! gateway is published beyond this machine; that Grafana asks everyone to
//! log in; that the application connects as its own role, not the
//! superuser; that every service's command runs as a plain process (the
//! Postgres init scripts, `gateway migrate` as the application's role,
//! Redis with its options); that every app service's configuration parses;
//! that every setting is in `.env.example`; and that every SQL query of the
//! Grafana dashboard runs.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::config::{Config, Profile};
use common::test_support::{Cleanup, unique};
use serde_json::Value as Json;
use serde_norway::Value;
use sqlx::{Connection, Executor, PgConnection};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Every secret of the stack: compose requires each, with no default. (One
/// string: common/tests/published_secrets.rs reads `"VAR", "value"` in Rust
/// as a published secret.)
const REQUIRED_NAMES: &str = "API_KEYS SENT_DM_API_KEY SENT_DM_WEBHOOK_SECRET CALLBACK_SIGNING_KEY \
                              POSTGRES_PASSWORD GATEWAY_DB_PASSWORD DASHBOARD_PASSWORD \
                              GRAFANA_ADMIN_PASSWORD";

fn required() -> Vec<&'static str> {
    REQUIRED_NAMES.split_whitespace().collect()
}

/// What a missing secret's message tells a newcomer to run instead.
const DEMO_COMMAND: &str = "docker compose --env-file deploy/demo.env up";

type Env = HashMap<String, String>;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// docker-compose.yml as YAML, anchors and merge keys resolved, not
/// interpolated.
fn compose() -> Value {
    let mut value: Value =
        serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    value.apply_merge().expect("merge keys resolve");
    // Nested anchors (`<<: *app-env` inside a merged map) need a second pass.
    value.apply_merge().expect("merge keys resolve");
    value
}

/// An env file as compose and dotenv read one: `NAME=value` lines, `#` comments.
fn env_file(path: &str) -> Env {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            (name.trim().to_owned(), value.to_owned())
        })
        .collect()
}

fn demo_env() -> Env {
    env_file("deploy/demo.env")
}

/// A production environment: every secret set, none from this repository.
fn production_env() -> Env {
    let fresh = || {
        format!(
            "{}{}",
            ulid::Ulid::generate().to_string().to_lowercase(),
            ulid::Ulid::generate().to_string().to_lowercase()
        )
    };
    let mut env: Env = required()
        .iter()
        .map(|name| (name.to_string(), fresh()))
        .collect();
    env.insert("API_KEYS".into(), format!("ops:{}", fresh()));
    let key = base64::engine::general_purpose::STANDARD.encode(fresh());
    env.insert("SENT_DM_WEBHOOK_SECRET".into(), format!("whsec_{key}"));
    env
}

/// Compose's interpolation of `text`: `$$`, `$VAR`, `${VAR}`,
/// `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`,
/// `${VAR:+alternative}`, `${VAR+alternative}`. A required variable that is
/// missing (or empty, with `:?`) goes to `missing` with its message.
fn interpolate(text: &str, env: &Env, missing: &mut Vec<(String, String)>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(inner) = after.strip_prefix('{') {
            let mut depth = 1;
            let end = inner
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap_or_else(|| panic!("unclosed ${{ in {text}"));
            out.push_str(&expand(&inner[..end], env, missing));
            rest = &inner[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 || after.starts_with(|c: char| c.is_ascii_digit()) {
                out.push('$');
            } else {
                out.push_str(env.get(&after[..len]).map_or("", String::as_str));
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

/// One `${...}` expression.
fn expand(expression: &str, env: &Env, missing: &mut Vec<(String, String)>) -> String {
    let len = expression
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expression.len());
    let (name, operator) = expression.split_at(len);
    let value = env.get(name).map(String::as_str);
    let (present, operator) = match operator.strip_prefix(':') {
        Some(operator) => (value.is_some_and(|v| !v.is_empty()), operator),
        None => (value.is_some(), operator),
    };
    let operand = operator.get(1..).unwrap_or("");
    match operator.chars().next() {
        None => value.unwrap_or("").to_owned(),
        Some('-') if present => value.unwrap().to_owned(),
        Some('-') => interpolate(operand, env, missing),
        Some('?') if present => value.unwrap().to_owned(),
        Some('?') => {
            let message = interpolate(operand, env, missing);
            missing.push((name.to_owned(), message));
            String::new()
        }
        Some('+') if present => interpolate(operand, env, missing),
        Some('+') => String::new(),
        Some(other) => panic!("unsupported interpolation ${{{expression}}} ({other})"),
    }
}

/// The compose file as compose would run it with `env` (the shell and the env
/// file), and the required variables that stop it.
fn resolve(env: &Env) -> (Value, Vec<(String, String)>) {
    fn walk(value: &mut Value, env: &Env, missing: &mut Vec<(String, String)>) {
        match value {
            Value::String(text) => *text = interpolate(text, env, missing),
            Value::Sequence(items) => items.iter_mut().for_each(|v| walk(v, env, missing)),
            Value::Mapping(map) => map.values_mut().for_each(|v| walk(v, env, missing)),
            _ => {}
        }
    }
    let mut value = compose();
    let mut missing = Vec::new();
    walk(&mut value, env, &mut missing);
    (value, missing)
}

/// The compose file with `env`, which must supply every required variable.
fn resolved(env: &Env) -> Value {
    let (value, missing) = resolve(env);
    assert!(missing.is_empty(), "compose refuses to start: {missing:?}");
    value
}

/// A service's `environment`, as a map of strings.
fn environment(service: &Value) -> Env {
    let mut vars = HashMap::new();
    if let Some(Value::Mapping(env)) = service.get("environment") {
        for (k, v) in env {
            if k.as_str() == Some("<<") {
                continue;
            }
            let value = match v {
                Value::String(s) => s.clone(),
                other => serde_norway::to_string(other).unwrap().trim().to_owned(),
            };
            vars.insert(k.as_str().unwrap().to_owned(), value);
        }
    }
    vars
}

fn command(service: &Value) -> Vec<String> {
    service["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn compose_has_the_whole_stack_in_order() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for needed in [
        "postgres",
        "redis",
        "migrate",
        "gateway",
        "worker",
        "sent-sim",
        "jaeger",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(needed), "service {needed} missing");
    }
    for (name, service) in services {
        let name = name.as_str().unwrap();
        assert!(
            service.get("image").is_some() || service.get("build").is_some(),
            "{name}: no image"
        );
        if let Some(deps) = service.get("depends_on") {
            let deps: Vec<&str> = match deps {
                Value::Mapping(m) => m.keys().filter_map(|k| k.as_str()).collect(),
                Value::Sequence(s) => s.iter().filter_map(|k| k.as_str()).collect(),
                _ => panic!("{name}: depends_on"),
            };
            for dep in deps {
                assert!(names.contains(dep), "{name} depends on unknown {dep}");
            }
        }
    }
    assert_eq!(
        compose["services"]["worker"]["deploy"]["replicas"].as_u64(),
        Some(2)
    );
    for with_health in ["postgres", "redis", "gateway"] {
        assert!(
            compose["services"][with_health]
                .get("healthcheck")
                .is_some(),
            "{with_health} healthcheck"
        );
    }
    assert_eq!(
        compose["services"]["gateway"]["depends_on"]["migrate"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
}

#[test]
fn every_secret_is_required_and_only_the_demo_env_file_supplies_them() {
    let text = read("docker-compose.yml");
    for name in required() {
        assert!(text.contains(&format!("${{{name}:?")), "{name} is required");
        for default in [format!("${{{name}:-"), format!("${{{name}-")] {
            assert!(!text.contains(&default), "{name} has a default");
        }
    }
    let all_required: BTreeSet<String> = required().into_iter().map(str::to_owned).collect();
    let names = |missing: &[(String, String)]| -> BTreeSet<String> {
        missing.iter().map(|(name, _)| name.clone()).collect()
    };

    // Nothing set: compose stops, naming each secret and the demo's command.
    let (_, missing) = resolve(&Env::new());
    assert_eq!(names(&missing), all_required);
    for (name, message) in &missing {
        assert!(
            message.contains(DEMO_COMMAND),
            "{name}'s message names the demo: {message}"
        );
    }
    // A .env copied from .env.example, secrets not filled in, stops it too.
    let (_, missing) = resolve(&env_file(".env.example"));
    assert_eq!(names(&missing), all_required);

    // The demo file supplies every one, each obviously local; it runs the
    // development profile with the gateway on this machine only.
    let demo = demo_env();
    resolved(&demo);
    for name in required() {
        let value = &demo[name];
        let shown = match value.strip_prefix("whsec_") {
            Some(key) => String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .unwrap(),
            )
            .unwrap(),
            None => value.clone(),
        };
        assert!(
            ["local", "dev-", "sim_"].iter().any(|w| shown.contains(w)),
            "{name}={value} does not say it is a local demo value"
        );
    }
    assert_eq!(demo["APP_ENV"], "development");
    assert_eq!(demo["GATEWAY_HOST_IP"], "127.0.0.1");
    assert!(read("deploy/demo.env").contains(DEMO_COMMAND));
}

#[test]
fn the_env_example_switches_nothing_insecure_on() {
    let mut example = env_file(".env.example");
    assert_eq!(
        example
            .get("WEBHOOK_ALLOW_LEGACY_SIGNATURE")
            .map(String::as_str),
        Some("false")
    );
    assert_eq!(example["APP_ENV"], "production");
    assert_eq!(example["DASHBOARD_PUBLIC"], "false");
    // Even in development, where the legacy signature is on by default.
    example.insert("APP_ENV".into(), "development".into());
    let config = Config::from_map(&example).expect(".env.example parses");
    assert!(!config.gateway.webhooks.allow_legacy_signature);
}

#[test]
fn grafana_asks_everyone_to_log_in_with_an_admin_password_from_the_environment() {
    let raw = environment(&compose()["services"]["grafana"]);
    assert_eq!(raw["GF_AUTH_ANONYMOUS_ENABLED"], "false");
    assert!(!raw.contains_key("GF_AUTH_ANONYMOUS_ORG_ROLE"));
    assert_eq!(raw["GF_USERS_ALLOW_SIGN_UP"], "false");
    for (name, value) in &raw {
        if name.starts_with("GF_AUTH_") && name.ends_with("_ENABLED") {
            assert_ne!(value.to_lowercase(), "true", "{name} switches a login off");
        }
    }
    assert!(
        raw["GF_SECURITY_ADMIN_PASSWORD"].starts_with("${GRAFANA_ADMIN_PASSWORD:?"),
        "the admin password is required from the environment: {}",
        raw["GF_SECURITY_ADMIN_PASSWORD"]
    );
    for env in [demo_env(), production_env()] {
        let grafana = environment(&resolved(&env)["services"]["grafana"]);
        assert_eq!(
            grafana["GF_SECURITY_ADMIN_PASSWORD"],
            env["GRAFANA_ADMIN_PASSWORD"]
        );
        assert_ne!(grafana["GF_SECURITY_ADMIN_PASSWORD"], "admin");
        assert_eq!(grafana["DASHBOARD_PASSWORD"], env["DASHBOARD_PASSWORD"]);
    }
}

/// The host address of each published port of a service ("" = every interface).
fn published_host_ips(service: &Value) -> Vec<String> {
    let Some(ports) = service.get("ports").and_then(Value::as_sequence) else {
        return Vec::new();
    };
    ports
        .iter()
        .map(|port| match port {
            Value::String(short) => {
                let parts: Vec<&str> = short.split(':').collect();
                if parts.len() == 3 {
                    parts[0].to_owned()
                } else {
                    String::new()
                }
            }
            Value::Mapping(_) => port
                .get("host_ip")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            other => panic!("port {other:?}"),
        })
        .collect()
}

#[test]
fn only_the_gateway_is_published_beyond_this_machine() {
    for (which, env) in [("production", production_env()), ("demo", demo_env())] {
        let compose = resolved(&env);
        for (name, service) in compose["services"].as_mapping().unwrap() {
            let name = name.as_str().unwrap();
            let ips = published_host_ips(service);
            if ["postgres", "redis", "sent-sim", "worker", "migrate"].contains(&name) {
                assert!(ips.is_empty(), "{which}: {name} is published");
            }
            if name == "gateway" {
                assert_eq!(ips.len(), 1);
                if which == "demo" {
                    assert_eq!(ips[0], "127.0.0.1", "the demo's gateway");
                }
                continue;
            }
            for ip in ips {
                assert_eq!(ip, "127.0.0.1", "{which}: {name} is published on {ip:?}");
            }
        }
        for ui in ["grafana", "prometheus", "jaeger"] {
            assert!(
                !published_host_ips(&compose["services"][ui]).is_empty(),
                "{ui} is published on 127.0.0.1"
            );
        }
    }
}

#[test]
fn the_application_connects_as_its_own_role_not_the_superuser() {
    let demo = demo_env();
    let compose = resolved(&demo);
    let postgres = environment(&compose["services"]["postgres"]);
    let superuser = postgres
        .get("POSTGRES_USER")
        .map_or("postgres", String::as_str);
    for name in ["migrate", "gateway", "worker"] {
        let url = url::Url::parse(&environment(&compose["services"][name])["DATABASE_URL"])
            .unwrap_or_else(|e| panic!("{name}: DATABASE_URL: {e}"));
        assert_ne!(
            url.username(),
            superuser,
            "{name} connects as the superuser"
        );
        assert_eq!(url.username(), postgres["GATEWAY_DB_USER"], "{name}");
        assert_eq!(url.password(), Some(demo["GATEWAY_DB_PASSWORD"].as_str()));
        assert_eq!(url.path(), format!("/{}", postgres["GATEWAY_DB_NAME"]));
    }
    assert_ne!(
        postgres["POSTGRES_PASSWORD"],
        postgres["GATEWAY_DB_PASSWORD"]
    );

    // The init scripts that create the roles run at the first start, the
    // application's role before Grafana's.
    let mounts = volumes(&compose["services"]["postgres"]);
    let init_target = |script: &str| {
        let (_, target) = mounts
            .iter()
            .find(|(source, _)| source == &format!("./deploy/postgres/{script}"))
            .unwrap_or_else(|| panic!("{script} is not mounted"));
        assert!(
            target.starts_with("/docker-entrypoint-initdb.d/"),
            "{target}"
        );
        let mode = std::fs::metadata(format!("{ROOT}/deploy/postgres/{script}"))
            .unwrap()
            .permissions()
            .mode();
        assert!(
            mode & 0o111 != 0,
            "{script} is executable (the entrypoint sources others)"
        );
        target.clone()
    };
    assert!(init_target("init-app-role.sh") < init_target("init-dashboard-role.sh"));

    // Grafana logs in as the dashboard role, to the application's database.
    let datasources: Value = serde_norway::from_str(&read(
        "deploy/grafana/provisioning/datasources/datasources.yml",
    ))
    .unwrap();
    let postgres_source = datasources["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|d| d["type"].as_str() == Some("postgres"))
        .unwrap();
    assert_eq!(
        postgres_source["user"].as_str(),
        Some(postgres["DASHBOARD_USER"].as_str())
    );
    assert_eq!(
        postgres_source["jsonData"]["database"].as_str(),
        Some(postgres["GATEWAY_DB_NAME"].as_str())
    );
}

#[test]
fn every_app_service_runs_a_binary_of_this_workspace_with_a_valid_configuration() {
    let dockerfile = read("Dockerfile");
    for (which, env) in [("production", production_env()), ("demo", demo_env())] {
        let compose = resolved(&env);
        for name in ["migrate", "gateway", "worker", "sent-sim"] {
            let service = &compose["services"][name];
            let run = command(service);
            let binary = run[0].as_str();
            assert!(
                ["gateway", "worker", "sent-sim"].contains(&binary),
                "{name} runs {run:?}"
            );
            assert!(
                dockerfile.contains(&format!("-p {binary}"))
                    && dockerfile.contains(&format!("target/release/{binary}")),
                "the image builds and holds {binary}"
            );
            let vars = environment(service);
            if binary == "sent-sim" {
                assert_eq!(
                    vars["SENT_SIM_WEBHOOK_SECRET"],
                    env["SENT_DM_WEBHOOK_SECRET"]
                );
                continue;
            }
            let config = Config::from_map(&vars).unwrap_or_else(|e| panic!("{which} {name}: {e}"));
            let profile = if which == "demo" {
                Profile::Development
            } else {
                Profile::Production
            };
            assert_eq!(config.profile, profile, "{which} {name}");
            if name == "worker" {
                config.require_sent_api_key().unwrap();
                let sim = environment(&compose["services"]["sent-sim"]);
                if which == "demo" {
                    assert!(
                        vars["SENT_BASE_URL"].contains("sent-sim"),
                        "the demo's workers use sent-sim"
                    );
                    assert_eq!(vars["SENT_DM_API_KEY"], sim["SENT_SIM_API_KEYS"]);
                } else {
                    assert_eq!(vars["SENT_BASE_URL"], "https://api.sent.dm");
                }
            }
        }
    }
    // The gateway binary accepts the migrate command the compose file uses.
    let help = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["migrate", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
}

/// A service's short-syntax volumes, as `(source, target)`.
fn volumes(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .filter_map(|v| {
            let mut parts = v.split(':');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

fn output_of(what: &str, output: std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed: {text}");
    text
}

/// The compose file's commands as plain processes on this machine, with the
/// demo's environment and the service names pointed at the local Postgres
/// and Redis: Postgres' init scripts as its entrypoint runs them (throwaway
/// role and database names, the superuser of the test server), then
/// `gateway migrate` connected as the application's role, which ends up
/// owning every table; and Redis with its options.
#[tokio::test]
async fn the_compose_commands_run_as_plain_processes() {
    let demo = demo_env();
    let compose = resolved(&demo);
    let admin_url = url::Url::parse(&common::test_support::admin_url()).unwrap();
    let mut admin = PgConnection::connect(admin_url.as_str()).await.unwrap();
    let mut cleanup = Cleanup::default();
    let app_role = unique("gwtest_app");
    let app_db = unique("gwtest_appdb");
    let dash_role = unique("gwtest_dash");
    cleanup.databases.push(app_db.clone());
    cleanup.roles.extend([app_role.clone(), dash_role.clone()]);
    // The group the migrations grant; shared by the cluster, as in compose.
    let _ = admin
        .execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dashboard_reader')
             THEN CREATE ROLE dashboard_reader NOLOGIN; END IF; END $$",
        )
        .await;

    let postgres = environment(&compose["services"]["postgres"]);
    let mut scripts: Vec<(String, String)> = volumes(&compose["services"]["postgres"])
        .into_iter()
        .filter_map(|(source, target)| {
            let script = target.strip_prefix("/docker-entrypoint-initdb.d/")?;
            Some((script.to_owned(), source))
        })
        .collect();
    scripts.sort();
    assert_eq!(scripts.len(), 2, "{scripts:?}");
    for (_, source) in &scripts {
        let mut run = Command::new(format!("{ROOT}/{}", source.trim_start_matches("./")));
        run.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&postgres)
            .env("POSTGRES_USER", admin_url.username())
            .env("POSTGRES_DB", admin_url.path().trim_start_matches('/'))
            .env("PGHOST", admin_url.host_str().unwrap())
            .env("PGPORT", admin_url.port().unwrap_or(5432).to_string())
            .env("GATEWAY_DB_USER", &app_role)
            .env("GATEWAY_DB_NAME", &app_db)
            .env("DASHBOARD_USER", &dash_role);
        if let Some(password) = admin_url.password() {
            run.env("PGPASSWORD", password);
        }
        output_of(source, run.output().unwrap());
    }

    // `gateway migrate`, as the migrate service runs it.
    let migrate = &compose["services"]["migrate"];
    let mut vars = environment(migrate);
    let mut database_url = url::Url::parse(&vars["DATABASE_URL"]).unwrap();
    assert_eq!(database_url.username(), postgres["GATEWAY_DB_USER"]);
    database_url.set_username(&app_role).unwrap();
    database_url.set_host(admin_url.host_str()).unwrap();
    database_url
        .set_port(Some(admin_url.port().unwrap_or(5432)))
        .unwrap();
    database_url.set_path(&app_db);
    let redis = common::test_support::redis_url();
    vars.insert("DATABASE_URL".into(), database_url.to_string());
    vars.insert("REDIS_URL".into(), redis.clone());
    vars.insert("RATELIMIT_STORAGE_URI".into(), redis);
    vars.remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    let migrate_command = command(migrate);
    assert_eq!(migrate_command[0], "gateway");
    let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(&migrate_command[1..])
        .env_clear()
        .envs(&vars)
        // No .env of a developer's checkout.
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let text = output_of("gateway migrate", output);
    assert!(text.contains("migrations applied"), "{text}");
    let mut app_admin = PgConnection::connect(&common::test_support::database_url(&app_db))
        .await
        .unwrap();
    let owners: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'p')",
    )
    .fetch_all(&mut app_admin)
    .await
    .unwrap();
    assert!(owners.iter().any(|(t, _)| t == "messages"), "{owners:?}");
    for (relation, owner) in &owners {
        assert_eq!(owner, &app_role, "{relation}");
    }
    let superuser: bool = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = $1")
        .bind(&app_role)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(!superuser);
    app_admin.close().await.unwrap();

    // The healthcheck: its options are pg_isready's (3: bad parameters).
    let health = compose["services"]["postgres"]["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(health[0], "CMD");
    let status = Command::new(&health[1])
        .args(&health[2..])
        .output()
        .unwrap()
        .status;
    assert_ne!(status.code(), Some(3), "{health:?}");

    // Redis with the compose file's options, on a socket of its own.
    let dir = std::env::temp_dir().join(unique("gwtest_redis"));
    std::fs::create_dir(&dir).unwrap();
    let socket = dir.join("redis.sock");
    let redis_command = command(&compose["services"]["redis"]);
    let mut server = Command::new(&redis_command[0])
        .args(&redis_command[1..])
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let cli = |args: &[&str]| {
        Command::new("redis-cli")
            .arg("-s")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    let mut answered = false;
    for _ in 0..50 {
        if String::from_utf8_lossy(&cli(&["ping"]).stdout).trim() == "PONG" {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let appendonly = String::from_utf8_lossy(&cli(&["config", "get", "appendonly"]).stdout)
        .split_whitespace()
        .last()
        .map(str::to_owned);
    let _ = cli(&["shutdown", "nosave"]);
    if tokio::time::timeout(Duration::from_secs(5), async {
        while server.try_wait().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_err()
    {
        let _ = server.kill();
        let _ = server.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(answered, "redis-server with {redis_command:?} answers");
    assert_eq!(appendonly.as_deref(), Some("yes"));
}

/// `30s` or `1m30s`, as compose writes durations.
fn compose_duration(text: &str) -> Duration {
    let (minutes, seconds) = text.split_once('m').unwrap_or(("0", text));
    let seconds = seconds.trim_end_matches('s');
    let seconds: u64 = if seconds.is_empty() {
        0
    } else {
        seconds.parse().unwrap()
    };
    Duration::from_secs(minutes.parse::<u64>().unwrap() * 60 + seconds)
}

#[test]
fn docker_waits_for_each_binary_to_shut_down_before_killing_it() {
    let compose = resolved(&production_env());
    let config = |name: &str| Config::from_map(&environment(&compose["services"][name])).unwrap();
    let needs = [
        ("gateway", gateway::longest_shutdown(&config("gateway"))),
        ("worker", config("worker").worker.shutdown_grace),
    ];
    for (name, needs) in needs {
        let grace = compose["services"][name]["stop_grace_period"]
            .as_str()
            .map_or(Duration::from_secs(10), compose_duration);
        assert!(
            grace > needs,
            "{name}: stop_grace_period {grace:?} but its shutdown may take {needs:?}"
        );
    }
}

#[test]
fn every_setting_the_code_reads_is_documented_in_env_example() {
    let example = read(".env.example");
    let config = read("common/src/config.rs");
    let reads = regex::Regex::new(r#"\(\s*"([A-Z][A-Z0-9_]{3,})""#).unwrap();
    let vars: BTreeSet<&str> = reads
        .captures_iter(&config)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert!(vars.len() > 40, "found only {vars:?}");
    let missing: Vec<&&str> = vars.iter().filter(|v| !example.contains(**v)).collect();
    assert!(missing.is_empty(), "not in .env.example: {missing:?}");
    // And what the compose file reads from the environment.
    let compose = read("docker-compose.yml");
    let interpolated = regex::Regex::new(r"\$\{([A-Z][A-Z0-9_]*)").unwrap();
    let missing: BTreeSet<&str> = interpolated
        .captures_iter(&compose)
        .map(|c| c.get(1).unwrap().as_str())
        .filter(|v| !example.contains(v))
        .collect();
    assert!(
        missing.is_empty(),
        "compose reads, .env.example lacks: {missing:?}"
    );
}

#[test]
fn prometheus_scrapes_the_gateway_and_every_worker() {
    let prometheus: Value =
        serde_norway::from_str(&read("deploy/prometheus/prometheus.yml")).unwrap();
    let text = serde_norway::to_string(&prometheus).unwrap();
    assert!(text.contains("gateway") && text.contains("8000"));
    assert!(text.contains("worker") && text.contains("9100"));
}

#[tokio::test]
async fn every_grafana_query_runs_against_the_schema() {
    let dashboard: Json =
        serde_json::from_str(&read("deploy/grafana/dashboards/sent-gateway.json")).unwrap();
    let datasources: Value = serde_norway::from_str(&read(
        "deploy/grafana/provisioning/datasources/datasources.yml",
    ))
    .unwrap();
    let uids: BTreeSet<&str> = datasources["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|d| d["uid"].as_str())
        .collect();
    let db = common::test_support::TestDatabase::new().await;
    let time_filter = regex::Regex::new(r"\$__timeFilter\((\w+)\)").unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let uid = panel["datasource"]["uid"].as_str().unwrap();
        assert!(
            uids.contains(uid),
            "panel {} uses unknown datasource {uid}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            let Some(sql) = target["rawSql"].as_str() else {
                continue;
            };
            let macro_free = time_filter.replace_all(sql, "$1 > now() - interval '6 hours'");
            // As the read-only dashboard role, which must be allowed to run it
            // (it reads the dashboard views only: common/tests/roles.rs).
            let mut tx = db.store.pool().begin().await.unwrap();
            sqlx::query("SET LOCAL ROLE dashboard_reader")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query(&macro_free)
                .fetch_all(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("panel {}: {e}\n{macro_free}", panel["title"]));
            checked += 1;
        }
    }
    assert!(checked >= 5);
}
