//! `rediss://`: against a `redis-server` of the test's own that speaks TLS
//! only (`--port 0`), with a CA made in the test (`common::test_support::TlsRedis`).
//! The server's certificate verifies against `REDIS_TLS_CA_FILE` and nothing
//! else: not the system's roots, not another CA, and never without checking.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::config::Config;
use common::domain::MessageId;
use common::queue::{SendJob, SendQueue};
use common::rate::{Quota, RateLimiter};
use common::redis_conn::RedisTls;
use common::test_support::{TlsRedis, unique};

fn config(pairs: &[(&str, &str)]) -> Result<Config, common::config::ConfigError> {
    let vars: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_map(&vars)
}

#[tokio::test]
async fn with_the_ca_file_the_queue_and_the_rate_limiter_work_over_tls() {
    let redis = TlsRedis::start();
    let config = config(&[
        ("REDIS_URL", &redis.url),
        ("REDIS_TLS_CA_FILE", redis.ca_file.to_str().unwrap()),
    ])
    .expect("a rediss:// URL with its CA file");
    assert!(config.redis_tls.has_ca_file());
    let conn = common::redis_conn::open(&config.redis, &config.redis_tls)
        .await
        .expect("connect over TLS");

    // A send job in, and back out of, the queue's keys.
    let prefix = unique("tls");
    let queue = SendQueue::new(conn.clone(), &prefix, common::queue::Sharding::ONE);
    let job = SendJob::new(MessageId::new(), BTreeMap::new());
    queue.enqueue(std::slice::from_ref(&job)).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), (0, 1));
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(queue.shards()[0].scheduled_jobs_set())
        .arg(0)
        .arg(-1)
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    let data: Vec<u8> = redis::cmd("HGET")
        .arg(queue.shards()[0].job_data_hash())
        .arg(&ids[0])
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    assert_eq!(serde_json::from_slice::<SendJob>(&data).unwrap(), job);
    assert_eq!(queue.promote_due(10).await.unwrap(), 1);

    // The rate limiter's Lua script (RATELIMIT_STORAGE_URI=rediss://...).
    let limiter = RateLimiter::redis(conn, prefix);
    let quota = Quota::per_minute(1);
    assert!(limiter.check("client", quota).await.unwrap().is_ok());
    assert!(limiter.check("client", quota).await.unwrap().is_err());

    // The certificate names localhost too.
    let by_name = format!("rediss://localhost:{}", redis.port);
    let mut conn = common::redis_conn::connect(&by_name, &config.redis_tls)
        .await
        .expect("connect to localhost over TLS");
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

/// The test's CA is in no system trust store: without REDIS_TLS_CA_FILE the
/// server is refused, at once, for its certificate.
#[tokio::test]
async fn without_the_ca_file_the_system_roots_refuse_the_server() {
    let redis = TlsRedis::start();
    let started = Instant::now();
    let err = common::redis_conn::connect(&redis.url, &RedisTls::system_roots())
        .await
        .map(|_| ())
        .expect_err("a certificate of an unknown CA");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.contains("certificate does not verify") && text.contains("UnknownIssuer"),
        "{text}"
    );
    assert!(
        text.contains("system's root certificates") && text.contains("REDIS_TLS_CA_FILE"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{text}");
}

#[tokio::test]
async fn a_wrong_ca_file_is_refused() {
    let redis = TlsRedis::start();
    let wrong = RedisTls::ca_file(&redis.other_ca_file).unwrap();
    let err = common::redis_conn::connect(&redis.url, &wrong)
        .await
        .map(|_| ())
        .expect_err("a certificate the other CA did not sign");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(text.contains("certificate does not verify"), "{text}");
    assert!(
        text.contains(&*redis.other_ca_file.to_string_lossy()),
        "names the CA file: {text}"
    );
}

/// The redis crate's `#insecure` fragment would skip verification: refused
/// before any connection, whatever the roots.
#[tokio::test]
async fn a_url_asking_to_skip_verification_is_refused() {
    let redis = TlsRedis::start();
    let insecure = format!("{}#insecure", redis.url);
    for tls in [
        RedisTls::system_roots(),
        RedisTls::ca_file(&redis.ca_file).unwrap(),
    ] {
        let err = common::redis_conn::connect(&insecure, &tls)
            .await
            .map(|_| ())
            .expect_err("#insecure");
        assert!(err.to_string().contains("#insecure"), "{err}");
    }
}

/// A CA file says the operator means TLS: a plaintext REDIS_URL beside it
/// is a mistake, named at start-up rather than sending in clear.
#[test]
fn a_ca_file_with_a_plaintext_redis_url_is_refused() {
    let redis = TlsRedis::start();
    let ca = redis.ca_file.to_str().unwrap();
    let err = config(&[
        ("REDIS_URL", &format!("redis://127.0.0.1:{}", redis.port)),
        ("REDIS_TLS_CA_FILE", ca),
    ])
    .unwrap_err();
    assert_eq!(err.var, "REDIS_URL");
    assert!(err.problem.contains("rediss://"), "{err}");
    // The CA file's Debug names it, not its contents.
    let config = config(&[("REDIS_URL", &redis.url), ("REDIS_TLS_CA_FILE", ca)]).unwrap();
    let debug = format!("{config:?}");
    assert!(debug.contains("ca.pem") && !debug.contains("BEGIN CERTIFICATE"));
}
