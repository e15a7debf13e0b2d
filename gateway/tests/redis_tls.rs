//! The whole gateway on a Redis that speaks TLS only (`rediss://`, a CA made
//! in the test in `REDIS_TLS_CA_FILE`): the queue and the shared rate limits
//! both connect through it, a message is accepted, and its job is in that
//! Redis.

mod support;

use std::collections::HashMap;

use common::config::Config;
use common::test_support::{TestDatabase, TlsRedis, unique};
use gateway::test_support::RunningGateway;
use support::{API_KEY, send_body, split};

#[tokio::test]
async fn the_gateway_accepts_a_message_over_tls_redis() {
    let redis = TlsRedis::start();
    let db = TestDatabase::new().await;
    let prefix = unique("gwtls");
    let vars: HashMap<String, String> = [
        ("APP_ENV", "testing"),
        ("LOG_LEVEL", "warn"),
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", redis.url.as_str()),
        ("REDIS_TLS_CA_FILE", redis.ca_file.to_str().unwrap()),
        ("REDIS_PREFIX", prefix.as_str()),
        ("API_KEYS", &format!("tester:{API_KEY}")),
        // The rate limiter's own connection, to the same TLS Redis.
        ("RATELIMIT_ENABLED", "true"),
        ("RATELIMIT_STORAGE_URI", redis.url.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = Config::from_map(&vars).expect("test config");
    let tls = config.redis_tls.clone();
    let store = common::store::Store::connect_lazy(config.database_url.expose(), 4).unwrap();
    let gateway = RunningGateway::start(config, store).await;

    let response = reqwest::Client::new()
        .post(gateway.url("/api/messages/send"))
        .bearer_auth(API_KEY)
        .json(&send_body())
        .send()
        .await
        .unwrap();
    let (status, _, body) = split(response).await;
    assert_eq!(status, 202, "{body}");
    let id = body["message_id"].as_str().unwrap().to_owned();

    // The job is in the TLS Redis, under this gateway's prefix.
    let mut conn = common::redis_conn::connect(&redis.url, &tls).await.unwrap();
    let config = &gateway.state.queue.shards()[0];
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(config.scheduled_jobs_set())
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let data: Vec<u8> = redis::cmd("HGET")
        .arg(config.job_data_hash())
        .arg(&ids[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let job: common::queue::SendJob = serde_json::from_slice(&data).unwrap();
    assert_eq!(job.message_id().to_string(), id);
    let limits: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:ratelimit:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !limits.is_empty(),
        "the rate limiter's keys are in the TLS Redis"
    );
}
