//! Failed authentication is limited per client address before any key is
//! looked up, and unknown keys cannot push valid ones out of the key cache.

mod support;

use common::store::NewApiKey;
use gateway::auth::hash_key;
use support::{API_KEY, TestApp};

/// `GET /api/messages` as the client at `forwarded` (behind the trusted
/// proxy 127.0.0.1), with `key`: the status.
async fn list_as(app: &TestApp, forwarded: &str, key: &str) -> u16 {
    app.http
        .get(app.url("/api/messages"))
        .header("x-forwarded-for", forwarded)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn repeated_failures_are_refused_before_the_key_is_looked_up() {
    let app = TestApp::spawn(&[
        ("RATELIMIT_ENABLED", "true"),
        ("RATELIMIT_DEFAULT", "1000/minute"),
        ("RATELIMIT_AUTH_FAILURES", "3/minute"),
        ("FORWARDED_ALLOW_IPS", "127.0.0.1"),
    ])
    .await;
    let guesser = "203.0.113.5";
    for _ in 0..3 {
        assert_eq!(list_as(&app, guesser, "guess-0123456789").await, 401);
    }
    let response = app
        .http
        .get(app.url("/api/messages"))
        .header("x-forwarded-for", guesser)
        .bearer_auth("guess-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    // Refused before the lookup: even the right key waits.
    assert_eq!(list_as(&app, guesser, API_KEY).await, 429);
    // Another client is not affected.
    assert_eq!(list_as(&app, "198.51.100.7", API_KEY).await, 200);

    // IPv6 clients are counted by their /64.
    for _ in 0..3 {
        assert_eq!(
            list_as(&app, "2001:db8:1:2::1", "guess-0123456789").await,
            401
        );
    }
    assert_eq!(list_as(&app, "2001:db8:1:2::ffff", API_KEY).await, 429);
    assert_eq!(list_as(&app, "2001:db8:1:3::1", API_KEY).await, 200);
}

#[tokio::test]
async fn a_flood_of_unknown_keys_does_not_evict_a_valid_one() {
    let app = TestApp::spawn(&[]).await;
    let key = "managed-key-0123456789abcdef0123456789";
    app.state
        .store
        .create_api_key(&NewApiKey {
            name: "managed".into(),
            key_hash: hash_key(key).to_vec(),
            key_prefix: key[..8].into(),
            callback_secret: common::signature::WebhookSecret::generate().to_whsec_string(),
            rate_limit: None,
        })
        .await
        .unwrap();
    let keys = &app.state.keys;
    assert_eq!(keys.authenticate(key).await.unwrap().name, "managed");
    for i in 0..10_050 {
        assert!(keys.authenticate(&format!("unknown-{i}")).await.is_err());
    }
    assert!(
        keys.unknown_cached() <= 10_000,
        "the unknown keys' cache is bounded"
    );
    // Revoked in the database, but still trusted from the cache (for up to
    // CACHE_TTL): the flood did not push it out.
    app.state.store.revoke_api_key("managed").await.unwrap();
    assert_eq!(keys.authenticate(key).await.unwrap().name, "managed");
}
