//! The Kubernetes manifests (`deploy/kubernetes`), rendered with `kubectl
//! kustomize` as a cluster would get them and checked against the binaries'
//! own settings, so that they cannot drift: the probes ask routes the
//! gateway serves (readiness one that reports its dependencies, liveness one
//! that does not), on the port `GATEWAY_BIND` opens; each process has the
//! time its shutdown takes before the kubelet kills it; every container's
//! configuration parses in production with the migrations left to the Job;
//! secrets come only from the `sent-gateway` Secret, which the base does not
//! ship; every container runs as the image's non-root user on a read-only
//! root filesystem with resource requests; the HPA, the PDB and the Service
//! act on the gateway's pods; and the example overlay and the worker
//! autoscaling example render and read what the binaries provide.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::config::{Config, Process, Profile};
use serde::Deserialize as _;
use serde_json::Value as Json;
use serde_norway::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const BASE: &str = "deploy/kubernetes";
const EXAMPLE: &str = "deploy/kubernetes/example";
const AUTOSCALING: &str = "deploy/kubernetes/autoscaling";

/// The Secret every reference names (before an overlay's hash suffix).
const SECRET: &str = "sent-gateway";
const GATEWAY: &str = "sent-gateway";
const WORKER: &str = "sent-gateway-worker";
const MIGRATE: &str = "sent-gateway-migrate";

/// What a grace period allows past a process's own longest shutdown: its
/// exit (flushing spans) and the kubelet's signalling.
const MARGIN: Duration = Duration::from_secs(10);

/// How long a deleted pod's endpoint may take to leave kube-proxy and the
/// ingress controllers, during which the gateway must still accept.
const ENDPOINT_PROPAGATION: Duration = Duration::from_secs(5);

type Env = HashMap<String, String>;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `kubectl kustomize dir`, one YAML value per document.
fn kustomize(dir: &Path) -> Vec<Value> {
    let output = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubectl is not installed: this test renders {} with `kubectl kustomize`; install \
             kubectl (https://kubernetes.io/docs/tasks/tools/), no cluster needed",
            dir.display()
        ),
        Err(e) => panic!("kubectl: {e}"),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_norway::Deserializer::from_slice(&output.stdout)
        .map(|document| Value::deserialize(document).expect("kustomize renders YAML"))
        .collect()
}

/// The rendered objects.
struct Rendered(Vec<Value>);

impl Rendered {
    fn of(path: &str) -> Rendered {
        Rendered(kustomize(&Path::new(ROOT).join(path)))
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|o| o["kind"].as_str() == Some(kind))
            .collect()
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.0
            .iter()
            .find(|o| {
                o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
    }

    /// The ConfigMap an `envFrom` names (kustomize appends a hash).
    fn config_map(&self, name: &str) -> Env {
        let map = self.get("ConfigMap", name);
        strings(&map["data"])
    }

    /// Every workload's pod template: (kind, name, pod spec).
    fn pods(&self) -> Vec<(String, String, &Value)> {
        self.0
            .iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "Job")))
            .map(|o| {
                (
                    o["kind"].as_str().unwrap().to_owned(),
                    o["metadata"]["name"].as_str().unwrap().to_owned(),
                    &o["spec"]["template"]["spec"],
                )
            })
            .collect()
    }

    fn pod(&self, kind: &str, name: &str) -> &Value {
        &self.get(kind, name)["spec"]["template"]["spec"]
    }
}

fn strings(map: &Value) -> Env {
    map.as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_owned(),
                        v.as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A pod's one container.
fn container(pod: &Value) -> &Value {
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1, "one container a pod");
    &containers[0]
}

fn items(value: &Value) -> &[Value] {
    value.as_sequence().map_or(&[], Vec::as_slice)
}

fn seconds(value: &Value) -> Duration {
    Duration::from_secs(
        value
            .as_u64()
            .unwrap_or_else(|| panic!("{value:?} is not seconds")),
    )
}

/// A secret key's reference: (Secret, key, optional).
struct SecretRef {
    env: String,
    secret: String,
    key: String,
    optional: bool,
}

fn secret_refs(container: &Value) -> Vec<SecretRef> {
    items(&container["env"])
        .iter()
        .filter_map(|var| {
            let reference = var["valueFrom"].get("secretKeyRef")?;
            Some(SecretRef {
                env: var["name"].as_str().unwrap().to_owned(),
                secret: reference["name"].as_str().unwrap_or("").to_owned(),
                key: reference["key"].as_str().unwrap_or("").to_owned(),
                optional: reference["optional"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

/// A fresh production value for a secret key: URLs with a password, an
/// admin key, a `whsec_` secret of 32 bytes, a long random string.
fn generated(key: &str) -> String {
    let fresh = || {
        format!(
            "{}{}",
            ulid::Ulid::generate().to_string().to_lowercase(),
            ulid::Ulid::generate().to_string().to_lowercase()
        )
    };
    match key {
        "DATABASE_URL" | "DATABASE_DIRECT_URL" | "DATABASE_READ_URL" => {
            format!("postgres://gateway:{}@postgres:5432/sent_gateway", fresh())
        }
        "REDIS_URL" => format!("redis://:{}@redis:6379", fresh()),
        "API_KEYS" => format!("ops:{}:admin", fresh()),
        "SENT_DM_WEBHOOK_SECRET" => format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(&fresh()[..32])
        ),
        _ => fresh(),
    }
}

/// The environment a container starts with, as the kubelet builds it:
/// `envFrom` first, then `env` (secret references from `secrets`, literal
/// values with `$(VAR)` of earlier variables expanded).
fn environment(rendered: &Rendered, container: &Value, secrets: &Env) -> Env {
    let mut env = Env::new();
    for source in items(&container["envFrom"]) {
        if let Some(name) = source["configMapRef"]["name"].as_str() {
            env.extend(rendered.config_map(name));
        } else if source.get("secretRef").is_some() {
            env.extend(secrets.clone());
        } else {
            panic!("envFrom of neither a ConfigMap nor a Secret: {source:?}");
        }
    }
    let reference = regex::Regex::new(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)").unwrap();
    for var in items(&container["env"]) {
        let name = var["name"].as_str().unwrap().to_owned();
        if let Some(value) = var["value"].as_str() {
            let expanded = reference.replace_all(value, |c: &regex::Captures| {
                env.get(&c[1]).cloned().unwrap_or_else(|| c[0].to_owned())
            });
            env.insert(name, expanded.into_owned());
        } else if let Some(r) = var["valueFrom"].get("secretKeyRef") {
            let key = r["key"].as_str().unwrap();
            match secrets.get(key) {
                Some(value) => {
                    env.insert(name, value.clone());
                }
                None if r["optional"].as_bool() == Some(true) => {}
                None => panic!("{name}: the Secret has no key {key}, and it is not optional"),
            }
        } else {
            panic!("{name}: neither a value nor a secretKeyRef: {var:?}");
        }
    }
    env
}

/// Every key some container requires of the Secret (not `optional`).
fn required_keys(rendered: &Rendered) -> BTreeSet<String> {
    rendered
        .pods()
        .iter()
        .flat_map(|(_, _, pod)| secret_refs(container(pod)))
        .filter(|r| !r.optional)
        .map(|r| r.key)
        .collect()
}

fn all_keys(rendered: &Rendered) -> BTreeSet<String> {
    rendered
        .pods()
        .iter()
        .flat_map(|(_, _, pod)| secret_refs(container(pod)))
        .map(|r| r.key)
        .collect()
}

/// The base's Secret as an operator makes it: every required key.
fn base_secrets(rendered: &Rendered) -> Env {
    required_keys(rendered)
        .into_iter()
        .map(|key| {
            let value = generated(&key);
            (key, value)
        })
        .collect()
}

/// What each workload runs as: the process reading the configuration.
fn process_of(kind: &str, name: &str) -> Process {
    match (kind, name) {
        ("Deployment", WORKER) => Process::Worker,
        ("Deployment", GATEWAY) | ("Job", MIGRATE) => Process::Gateway,
        other => panic!("unexpected workload {other:?}"),
    }
}

/// The container's configuration, as its binary parses it.
fn config(rendered: &Rendered, kind: &str, name: &str, secrets: &Env) -> Config {
    let env = environment(rendered, container(rendered.pod(kind, name)), secrets);
    Config::from_map_for(&env, process_of(kind, name))
        .unwrap_or_else(|e| panic!("{kind} {name}: {e}"))
}

/// A port of the container, by number or by name.
fn container_port(container: &Value, port: &Value) -> u16 {
    let number = match port.as_u64() {
        Some(number) => number,
        None => {
            let name = port.as_str().unwrap();
            items(&container["ports"])
                .iter()
                .find(|p| p["name"].as_str() == Some(name))
                .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
                .as_u64()
                .unwrap()
        }
    };
    let declared = items(&container["ports"])
        .iter()
        .any(|p| p["containerPort"].as_u64() == Some(number));
    assert!(declared, "port {number} is not a port of the container");
    u16::try_from(number).unwrap()
}

/// Whether `labels` has every pair of `selector`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = strings(selector);
    let labels = strings(labels);
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn the_base_renders_every_piece_and_no_secret() {
    let rendered = Rendered::of(BASE);
    rendered.get("Deployment", GATEWAY);
    rendered.get("Deployment", WORKER);
    rendered.get("Job", MIGRATE);
    rendered.get("Service", GATEWAY);
    rendered.get("HorizontalPodAutoscaler", GATEWAY);
    rendered.get("PodDisruptionBudget", GATEWAY);
    assert!(
        rendered.all("Secret").is_empty(),
        "the base ships no Secret: its values would be published defaults"
    );
    assert_eq!(
        rendered.get("HorizontalPodAutoscaler", GATEWAY)["apiVersion"].as_str(),
        Some("autoscaling/v2")
    );
}

#[test]
fn every_container_runs_a_binary_of_the_image_as_its_non_root_user_read_only() {
    let rendered = Rendered::of(BASE);
    let dockerfile = read("Dockerfile");
    let uid: u64 = regex::Regex::new(r"--uid (\d+)[^\n]* (\w+)\n")
        .unwrap()
        .captures(&dockerfile)
        .and_then(|c| {
            let user = c.get(2).unwrap().as_str();
            let runs_as = dockerfile.contains(&format!("\nUSER {user}\n"))
                || dockerfile.contains(&format!("\nUSER {}\n", &c[1]));
            runs_as.then(|| c[1].parse().unwrap())
        })
        .expect("the Dockerfile makes a user with a numeric --uid and runs as it (USER)");
    assert_ne!(uid, 0);
    let expected: [(&str, &str, &[&str]); 3] = [
        ("Deployment", GATEWAY, &["gateway"]),
        ("Deployment", WORKER, &["worker"]),
        ("Job", MIGRATE, &["gateway", "migrate"]),
    ];
    let pods = rendered.pods();
    assert_eq!(
        pods.len(),
        expected.len(),
        "a workload this test does not know"
    );
    for (kind, name, command) in expected {
        let pod = rendered.pod(kind, name);
        let container = container(pod);
        let what = format!("{kind} {name}");
        let run: Vec<&str> = items(&container["command"])
            .iter()
            .map(|v| v.as_str().unwrap())
            .chain(
                items(&container["args"])
                    .iter()
                    .map(|v| v.as_str().unwrap()),
            )
            .collect();
        assert_eq!(run, command, "{what} runs");
        assert!(
            dockerfile.contains(&format!("target/release/{}", command[0])),
            "{what}: the image holds {}",
            command[0]
        );
        // The container's securityContext, over the pod's.
        let security = |field: &str| {
            let own = &container["securityContext"][field];
            if own.is_null() {
                &pod["securityContext"][field]
            } else {
                own
            }
        };
        assert_eq!(security("runAsNonRoot").as_bool(), Some(true), "{what}");
        assert_eq!(
            security("runAsUser").as_u64(),
            Some(uid),
            "{what}: the image's user"
        );
        assert_eq!(
            security("readOnlyRootFilesystem").as_bool(),
            Some(true),
            "{what}"
        );
        assert_eq!(
            security("allowPrivilegeEscalation").as_bool(),
            Some(false),
            "{what}"
        );
        assert_eq!(
            security("seccompProfile")["type"].as_str(),
            Some("RuntimeDefault"),
            "{what}"
        );
        let dropped: Vec<&str> = items(&security("capabilities")["drop"])
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(dropped, ["ALL"], "{what}: capabilities");
        assert!(items(&security("capabilities")["add"]).is_empty(), "{what}");
        assert_ne!(security("runAsGroup").as_u64(), Some(0), "{what}");
        assert_ne!(security("privileged").as_bool(), Some(true), "{what}");
        // Writable places, if any, are emptyDirs.
        for mount in items(&container["volumeMounts"]) {
            let volume = items(&pod["volumes"])
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            assert!(volume.get("emptyDir").is_some(), "{what}: {mount:?}");
        }
        assert_eq!(
            pod["automountServiceAccountToken"].as_bool(),
            Some(false),
            "{what}: nothing in it talks to the Kubernetes API"
        );
        let resources = &container["resources"];
        for request in ["cpu", "memory"] {
            assert!(
                !resources["requests"][request].is_null(),
                "{what}: requests.{request}"
            );
        }
        assert!(
            !resources["limits"]["memory"].is_null(),
            "{what}: limits.memory"
        );
    }
}

/// The route a container's HTTP probe asks, on `port`, and the answers the
/// gateway's OpenAPI document gives it.
fn probed<'a>(
    container: &'a Value,
    document: &'a Json,
    probe: &str,
    port: u16,
) -> (&'a str, &'a serde_json::Map<String, Json>) {
    let get = &container[probe]["httpGet"];
    let path = get["path"]
        .as_str()
        .unwrap_or_else(|| panic!("{probe} is an HTTP GET"));
    assert_eq!(
        container_port(container, &get["port"]),
        port,
        "{probe}: GATEWAY_BIND's port"
    );
    let operation = &document["paths"][path]["get"];
    assert!(
        operation.is_object(),
        "{probe}: GET {path} is not a route of the gateway (gateway::app::document())"
    );
    (path, operation["responses"].as_object().unwrap())
}

#[test]
fn the_probes_ask_routes_the_gateway_serves_on_the_port_it_binds() {
    let rendered = Rendered::of(BASE);
    let secrets = base_secrets(&rendered);
    let config = config(&rendered, "Deployment", GATEWAY, &secrets);
    let pod = rendered.pod("Deployment", GATEWAY);
    let container = container(pod);
    let document = serde_json::to_value(gateway::app::document()).unwrap();
    let (ready, readiness) = probed(
        container,
        &document,
        "readinessProbe",
        config.gateway.bind.port(),
    );
    assert!(
        readiness.contains_key("503"),
        "readiness ({ready}) answers 503 when a dependency fails or the gateway drains"
    );
    for probe in ["livenessProbe", "startupProbe"] {
        let (path, answers) = probed(container, &document, probe, config.gateway.bind.port());
        for status in ["503", "429"] {
            assert!(
                !answers.contains_key(status),
                "{probe} ({path}) may answer {status}: the kubelet would restart a gateway \
                 that is only waiting for a dependency or rate limited"
            );
        }
    }
    // The listener opens only after Postgres, the schema and Redis answered,
    // each waited for up to STARTUP_WAIT: liveness starts after that.
    let startup = &container["startupProbe"];
    let startup_window = seconds(&startup["periodSeconds"])
        * u32::try_from(startup["failureThreshold"].as_u64().unwrap()).unwrap();
    assert!(
        startup_window >= common::startup::STARTUP_WAIT * 3,
        "the startup probe gives up after {startup_window:?}, before start-up's waits"
    );
    // Once the listener closes, the drain takes the rest of the shutdown:
    // liveness must not kill the gateway during it.
    let liveness = &container["livenessProbe"];
    let liveness_window = seconds(&liveness["periodSeconds"])
        * u32::try_from(liveness["failureThreshold"].as_u64().unwrap()).unwrap();
    let drain = gateway::longest_shutdown(&config) - config.gateway.shutdown_delay;
    assert!(
        liveness_window > drain,
        "liveness fails after {liveness_window:?}, within the drain ({drain:?})"
    );
    assert!(
        config.gateway.bind.ip().is_unspecified(),
        "GATEWAY_BIND {} is not reachable at the pod's address",
        config.gateway.bind
    );
    // A rate-limited readiness route: the kubelet probes every pod on a node
    // from the node's address, which the shared limit counts as one client.
    if readiness.contains_key("429") {
        let quota = config.gateway.rate_limit.default;
        let period = seconds(&container["readinessProbe"]["periodSeconds"]);
        let pods = rendered.get("HorizontalPodAutoscaler", GATEWAY)["spec"]["maxReplicas"]
            .as_u64()
            .unwrap();
        let probes = pods as f64 * quota.period.as_secs_f64() / period.as_secs_f64();
        assert!(
            probes < f64::from(quota.count.get()),
            "{pods} gateways on one node probe {ready} {probes} times per {:?}, past \
             RATELIMIT_DEFAULT ({} per {:?}): readiness would fail with 429",
            quota.period,
            quota.count,
            quota.period
        );
    }
    // The Service reaches that port on the gateway's pods.
    let service = rendered.get("Service", GATEWAY);
    let labels = &rendered.get("Deployment", GATEWAY)["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&service["spec"]["selector"], labels));
    for port in items(&service["spec"]["ports"]) {
        assert_eq!(
            container_port(container, &port["targetPort"]),
            config.gateway.bind.port()
        );
    }
}

/// A preStop hook's sleep: the `sleep` action, or `sleep N` run in the
/// container.
fn pre_stop_sleep(container: &Value) -> Duration {
    let pre_stop = &container["lifecycle"]["preStop"];
    if pre_stop.is_null() {
        return Duration::ZERO;
    }
    if let Some(seconds) = pre_stop["sleep"]["seconds"].as_u64() {
        return Duration::from_secs(seconds);
    }
    let command: Vec<&str> = items(&pre_stop["exec"]["command"])
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    match command[..] {
        [sleep, seconds] if sleep.ends_with("sleep") => {
            Duration::from_secs(seconds.parse().unwrap())
        }
        _ => panic!("a preStop hook this test cannot time: {pre_stop:?}"),
    }
}

#[test]
fn each_process_has_the_time_its_shutdown_takes() {
    let rendered = Rendered::of(BASE);
    let secrets = base_secrets(&rendered);

    let gateway_config = config(&rendered, "Deployment", GATEWAY, &secrets);
    let pod = rendered.pod("Deployment", GATEWAY);
    let grace = seconds(&pod["terminationGracePeriodSeconds"]);
    let pre_stop = pre_stop_sleep(container(pod));
    let needs = pre_stop + gateway::longest_shutdown(&gateway_config) + MARGIN;
    assert!(
        grace >= needs,
        "gateway: terminationGracePeriodSeconds {grace:?}, but a preStop of {pre_stop:?} and \
         a shutdown of up to {:?} (gateway::longest_shutdown) need {needs:?}",
        gateway::longest_shutdown(&gateway_config)
    );
    // From the pod's deletion the gateway must go on accepting while its
    // endpoint leaves the Service.
    let accepting = pre_stop + gateway_config.gateway.shutdown_delay;
    assert!(
        accepting >= ENDPOINT_PROPAGATION,
        "the gateway stops accepting {accepting:?} after its pod is deleted: raise \
         GATEWAY_SHUTDOWN_DELAY_SECS to at least {ENDPOINT_PROPAGATION:?}"
    );

    let worker_config = config(&rendered, "Deployment", WORKER, &secrets);
    let grace = seconds(&rendered.pod("Deployment", WORKER)["terminationGracePeriodSeconds"]);
    let needs = worker_config.worker.shutdown_grace + MARGIN;
    assert!(
        grace >= needs,
        "worker: terminationGracePeriodSeconds {grace:?} < WORKER_SHUTDOWN_GRACE_SECS ({:?}) \
         + {MARGIN:?}",
        worker_config.worker.shutdown_grace
    );
}

#[test]
fn every_configuration_parses_in_production_and_the_job_alone_migrates() {
    let rendered = Rendered::of(BASE);
    let secrets = base_secrets(&rendered);
    for (kind, name, pod) in rendered.pods() {
        let config = config(&rendered, &kind, &name, &secrets);
        assert_eq!(
            config.profile,
            Profile::Production,
            "{kind} {name}: APP_ENV"
        );
        let env = environment(&rendered, container(pod), &secrets);
        if kind == "Deployment" {
            assert_eq!(
                env.get("MIGRATE_ON_START").map(String::as_str),
                Some("false"),
                "{name}: the Job migrates, pods wait for the schema"
            );
            assert!(!config.migrate_on_start, "{name}");
        }
    }
    let job = rendered.get("Job", MIGRATE);
    assert_eq!(
        job["spec"]["template"]["spec"]["restartPolicy"].as_str(),
        Some("Never")
    );
    let run = items(&container(rendered.pod("Job", MIGRATE))["command"]).to_vec();
    assert_eq!(run, [Value::from("gateway"), Value::from("migrate")]);

    let worker = config(&rendered, "Deployment", WORKER, &secrets);
    worker
        .require_sent_api_key()
        .expect("the worker calls Sent");
    let worker_container = container(rendered.pod("Deployment", WORKER));
    assert!(worker.worker.metrics_bind_set, "WORKER_METRICS_BIND is set");
    assert!(worker.worker.metrics_bind.ip().is_unspecified());
    let port = worker.worker.metrics_bind.port();
    container_port(worker_container, &Value::from(u64::from(port)));
    let gateway_port = config(&rendered, "Deployment", GATEWAY, &secrets)
        .gateway
        .bind
        .port();
    for (name, pod_port) in [(WORKER, port), (GATEWAY, gateway_port)] {
        let annotations = strings(
            &rendered.get("Deployment", name)["spec"]["template"]["metadata"]["annotations"],
        );
        if let Some(scraped) = annotations.get("prometheus.io/port") {
            assert_eq!(scraped, &pod_port.to_string(), "{name}: the metrics port");
        }
    }

    // Parsed above; shared means anything but memory://.
    let env = environment(
        &rendered,
        container(rendered.pod("Deployment", GATEWAY)),
        &secrets,
    );
    let storage = env.get("RATELIMIT_STORAGE_URI").map_or("", String::as_str);
    assert!(
        storage.starts_with("redis"),
        "the HPA runs several gateways: their rate limits must be shared \
         (RATELIMIT_STORAGE_URI=redis://..., not '{storage}')"
    );
}

/// Names whose values are secrets, whatever the Secret's keys are.
fn secret_name(name: &str) -> bool {
    ["KEY", "SECRET", "TOKEN", "PASSWORD"]
        .iter()
        .any(|word| name.contains(word))
        || (name.starts_with("DATABASE_") && name.ends_with("_URL"))
        || name == "DATABASE_URL"
        || name == "REDIS_URL"
}

#[test]
fn secrets_come_from_the_secret_and_are_never_inlined() {
    let rendered = Rendered::of(BASE);
    let keys = all_keys(&rendered);
    let credentials = regex::Regex::new(r"://[^/\s@]*:[^/\s@]+@").unwrap();
    let reference = regex::Regex::new(r"^\$\(([A-Za-z_][A-Za-z0-9_]*)\)$").unwrap();
    for map in rendered.all("ConfigMap") {
        for (name, value) in strings(&map["data"]) {
            assert!(
                !secret_name(&name) && !keys.contains(&name),
                "{name} is a secret: it belongs in the Secret, not a ConfigMap"
            );
            assert!(!credentials.is_match(&value), "{name} holds a password");
        }
    }
    for (kind, name, pod) in rendered.pods() {
        let container = container(pod);
        let what = format!("{kind} {name}");
        for source in items(&container["envFrom"]) {
            if let Some(secret) = source["secretRef"]["name"].as_str() {
                assert_eq!(secret, SECRET, "{what}");
            }
        }
        let from_secret: BTreeSet<String> =
            secret_refs(container).into_iter().map(|r| r.env).collect();
        for r in secret_refs(container) {
            assert_eq!(r.secret, SECRET, "{what}: {} names another Secret", r.env);
            assert!(!r.key.is_empty(), "{what}: {} names no key", r.env);
        }
        for var in items(&container["env"]) {
            let Some(value) = var["value"].as_str() else {
                continue;
            };
            let var_name = var["name"].as_str().unwrap();
            assert!(
                !credentials.is_match(value),
                "{what}: {var_name} holds a password"
            );
            let reads_secret = reference
                .captures(value)
                .is_some_and(|c| from_secret.contains(&c[1]));
            assert!(
                !(secret_name(var_name) || keys.contains(var_name)) || reads_secret,
                "{what}: {var_name} is a secret inlined in the manifest: use a secretKeyRef"
            );
            if let Some(c) = reference.captures(value) {
                assert!(
                    from_secret.contains(&c[1]) || !secret_name(&c[1]),
                    "{what}: {var_name} reads {}, which is not defined before it",
                    &c[1]
                );
            }
        }
    }
    // The README's `kubectl create secret` makes every key a pod requires,
    // and none that no pod reads.
    let readme = read("deploy/kubernetes/README.md");
    let command_start = readme
        .find(&format!("create secret generic {SECRET}"))
        .expect("the README shows how to create the Secret");
    let command: String = readme[command_start..]
        .lines()
        .take_while(|line| !line.trim().is_empty() && !line.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n");
    let literal = regex::Regex::new(r"--from-literal=([A-Z_]+)=").unwrap();
    let documented: BTreeSet<String> = literal
        .captures_iter(&command)
        .map(|c| c[1].to_owned())
        .collect();
    let required = required_keys(&rendered);
    assert!(
        required.is_subset(&documented),
        "the README's command lacks {:?}",
        required.difference(&documented).collect::<Vec<_>>()
    );
    assert!(
        documented.is_subset(&keys),
        "the README's command makes keys no pod reads: {:?}",
        documented.difference(&keys).collect::<Vec<_>>()
    );
}

#[test]
fn the_hpa_scales_the_gateway_by_cpu_and_the_pdb_lets_one_go() {
    let rendered = Rendered::of(BASE);
    let deployment = rendered.get("Deployment", GATEWAY);
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the HPA sets the gateway's replicas: each apply would reset a count set here"
    );
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        labels
    ));

    let hpa = &rendered.get("HorizontalPodAutoscaler", GATEWAY)["spec"];
    assert_eq!(hpa["scaleTargetRef"]["kind"].as_str(), Some("Deployment"));
    assert_eq!(hpa["scaleTargetRef"]["name"].as_str(), Some(GATEWAY));
    let min = hpa["minReplicas"].as_u64().unwrap();
    assert!(min >= 2, "one gateway is a single point of failure");
    assert!(hpa["maxReplicas"].as_u64().unwrap() > min);
    let cpu = items(&hpa["metrics"])
        .iter()
        .find(|m| m["resource"]["name"].as_str() == Some("cpu"))
        .expect("the HPA scales by CPU");
    assert_eq!(cpu["type"].as_str(), Some("Resource"));
    if cpu["resource"]["target"]["type"].as_str() == Some("Utilization") {
        assert!(
            !container(rendered.pod("Deployment", GATEWAY))["resources"]["requests"]["cpu"]
                .is_null(),
            "CPU utilization is a share of the request"
        );
    }

    let pdb = &rendered.get("PodDisruptionBudget", GATEWAY)["spec"];
    assert!(selects(&pdb["selector"]["matchLabels"], labels));
    let allows_one = match (pdb["maxUnavailable"].as_u64(), pdb["minAvailable"].as_u64()) {
        (Some(max), None) => max >= 1,
        (None, Some(min_available)) => min_available < min,
        _ => panic!("the PDB sets one of maxUnavailable or minAvailable, as a number"),
    };
    assert!(allows_one, "the PDB would block every node drain");
}

/// `deploy/kubernetes` copied to a temporary directory, with the example's
/// git-ignored `secrets.env` written from `secrets.env.example`'s keys.
struct ExampleCopy {
    dir: PathBuf,
    secrets: Env,
}

impl ExampleCopy {
    fn new() -> ExampleCopy {
        let dir = std::env::temp_dir().join(common::test_support::unique("gwtest_k8s"));
        let copy = Command::new("cp")
            .arg("-r")
            .arg(Path::new(ROOT).join(BASE))
            .arg(&dir)
            .status()
            .unwrap();
        assert!(copy.success());
        let secrets: Env = read(&format!("{EXAMPLE}/secrets.env.example"))
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (key, _) = line.split_once('=').expect("NAME=value");
                (key.to_owned(), generated(key))
            })
            .collect();
        let file: String = secrets.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(dir.join("example/secrets.env"), file).unwrap();
        ExampleCopy { dir, secrets }
    }
}

impl Drop for ExampleCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_example_overlay_makes_the_secret_from_a_git_ignored_file() {
    let ignored = Command::new("git")
        .args(["check-ignore", "-q", "--no-index"])
        .arg(format!("{EXAMPLE}/secrets.env"))
        .current_dir(ROOT)
        .status()
        .unwrap();
    assert!(
        ignored.success(),
        "{EXAMPLE}/secrets.env is not git-ignored"
    );

    let copy = ExampleCopy::new();
    let rendered = Rendered(kustomize(&copy.dir.join("example")));
    let [secret] = rendered.all("Secret")[..] else {
        panic!("the example makes one Secret");
    };
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    assert!(secret_name.starts_with(SECRET), "{secret_name}");
    let data: Env = strings(&secret["data"])
        .into_iter()
        .map(|(k, v)| {
            let value = base64::engine::general_purpose::STANDARD
                .decode(v.split_whitespace().collect::<String>())
                .unwrap();
            (k, String::from_utf8(value).unwrap())
        })
        .collect();
    assert_eq!(data, copy.secrets);
    let keys: BTreeSet<String> = data.keys().cloned().collect();
    let required = required_keys(&rendered);
    assert!(
        required.is_subset(&keys),
        "secrets.env.example lacks {:?}",
        required.difference(&keys).collect::<Vec<_>>()
    );
    assert!(
        keys.is_subset(&all_keys(&rendered)),
        "secrets.env.example has keys no pod reads: {:?}",
        keys.difference(&all_keys(&rendered)).collect::<Vec<_>>()
    );
    for (kind, name, pod) in rendered.pods() {
        let container = container(pod);
        for r in secret_refs(container) {
            assert_eq!(r.secret, secret_name, "{kind} {name}: {}", r.env);
        }
        assert!(
            container["image"].as_str().unwrap().contains(':'),
            "{kind} {name}: the example names an image and its tag"
        );
        let config = config(&rendered, &kind, &name, &data);
        assert_eq!(config.profile, Profile::Production);
    }
}

#[test]
fn the_worker_autoscaling_example_reads_the_queue_depth_the_workers_export() {
    let rendered = Rendered::of(AUTOSCALING);
    let [scaled] = rendered.all("ScaledObject")[..] else {
        panic!("the autoscaling example has one ScaledObject");
    };
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"].as_str(),
        Some(WORKER)
    );
    rendered.get("Deployment", WORKER);
    assert!(
        rendered.get("Deployment", WORKER)["spec"]
            .get("replicas")
            .is_none(),
        "KEDA sets the workers' replicas: an apply must not reset them"
    );
    let triggers = items(&scaled["spec"]["triggers"]);
    assert!(!triggers.is_empty());
    let worker_metrics = read("worker/src/metrics.rs");
    let selector = regex::Regex::new(r#"(\w+)\{(\w+)="(\w+)"\}"#).unwrap();
    for trigger in triggers {
        let query = trigger["metadata"]["query"].as_str().unwrap();
        let c = selector
            .captures(query)
            .unwrap_or_else(|| panic!("a query on one series: {query}"));
        assert_eq!(&c[1], common::metrics::QUEUE_DEPTH, "{query}");
        assert!(
            worker_metrics.contains(&format!(r#""{}" => "{}""#, &c[2], &c[3])),
            "{query}: the worker sets no such label"
        );
    }
}
