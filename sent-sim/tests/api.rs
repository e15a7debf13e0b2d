//! The v3 API surface: auth, validation, the 202, idempotency, sandbox,
//! magic errors, GET, stats.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use sent_sim::{SimConfig, Stats};
use serde_json::{Value, json};
use support::{KEY, body, client, first_id, get_message, keys, parts, send, start, wait_for};

#[tokio::test]
async fn auth_missing_and_wrong_key_are_401_with_codes() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let url = format!("{}/v3/messages", sim.base_url());

    let missing = client
        .post(&url)
        .json(&body("+14155550123"))
        .send()
        .await
        .unwrap();
    let (status, headers, json) = parts(missing).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["error"]["code"], "AUTH_001");
    assert_eq!(json["success"], false);
    assert!(json["data"].is_null());
    assert!(headers.contains_key("x-request-id"));

    let wrong = client
        .post(&url)
        .header("x-api-key", "nope")
        .json(&body("+14155550123"))
        .send()
        .await
        .unwrap();
    let (status, _, json) = parts(wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["error"]["code"], "AUTH_002");

    let get = client
        .get(format!(
            "{}/v3/messages/{}",
            sim.base_url(),
            uuid::Uuid::new_v4()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(parts(get).await.2["error"]["code"], "AUTH_001");
    assert_eq!(sim.stats().messages_created, 0);
}

#[tokio::test]
async fn several_keys_are_separate_accounts() {
    let config = SimConfig {
        api_keys: vec!["key_a".into(), "key_b".into()],
        ..SimConfig::default()
    };
    let sim = start(config).await;
    let client = client();
    let accepted = client
        .post(format!("{}/v3/messages", sim.base_url()))
        .header("x-api-key", "key_b")
        .json(&body("+14155550123"))
        .send()
        .await
        .unwrap();
    let (status, _, json) = parts(accepted).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = first_id(&json);
    let own = get_message(&client, &sim, &id, "key_b").await;
    assert_eq!(own.status(), StatusCode::OK);
    let other = get_message(&client, &sim, &id, "key_a").await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn validation_errors_are_400_with_codes_and_details() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let future = |secs: i64| (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339();
    let cases: Vec<(Value, Option<&str>, &str, &str)> = vec![
        (
            json!({"template": {"id": "t"}}),
            None,
            "VALIDATION_001",
            "to",
        ),
        (
            json!({"to": ["4155550123"], "template": {"id": "t"}}),
            None,
            "VALIDATION_002",
            "to",
        ),
        (
            json!({"to": ["+0155550123"], "template": {"id": "t"}}),
            None,
            "VALIDATION_002",
            "to",
        ),
        (
            json!({"to": ["+14155550123"]}),
            None,
            "VALIDATION_003",
            "template",
        ),
        (
            json!({"to": ["+14155550123"], "template": {"parameters": {"a": "b"}}}),
            None,
            "VALIDATION_003",
            "template",
        ),
        (
            json!({"to": ["+14155550123"], "template": {"id": "t"}, "channel": ["fax"]}),
            None,
            "VALIDATION_004",
            "channel",
        ),
        (
            json!({"to": ["+14155550123"], "template": {"id": "t"}, "scheduled_at": "tomorrow"}),
            None,
            "VALIDATION_005",
            "scheduled_at",
        ),
        (
            json!({"to": ["+14155550123"], "template": {"id": "t"}, "scheduled_at": "2030-01-01T10:00:00"}),
            None,
            "VALIDATION_005",
            "scheduled_at",
        ),
        (
            json!({"to": ["+14155550123"], "template": {"id": "t"}, "scheduled_at": future(10)}),
            None,
            "VALIDATION_005",
            "scheduled_at",
        ),
        (
            json!({"to": ["+14155550123"], "template": {"id": "t"}, "scheduled_at": future(40 * 86_400)}),
            None,
            "VALIDATION_005",
            "scheduled_at",
        ),
        (
            body("+14155550123"),
            Some("has space"),
            "VALIDATION_006",
            "Idempotency-Key",
        ),
        (
            json!({"to": "+14155550123", "template": {"id": "t"}}),
            None,
            "VALIDATION_001",
            "to",
        ),
        (json!([]), None, "VALIDATION_001", "body"),
        // Sent's `channels` is a map of channel -> sender entries, not a list.
        (
            json!({"to": ["+14155550123"], "template": {"id": "t"}, "channels": ["sms"]}),
            None,
            "VALIDATION_001",
            "channels",
        ),
        (
            json!({"to": ["+14155550123"], "template": {"id": "t"}, "sandbox": "true"}),
            None,
            "VALIDATION_001",
            "sandbox",
        ),
        (
            json!({"to": ["+14155550123"], "template": {"id": "t", "parameters": {"n": 1}}}),
            None,
            "VALIDATION_001",
            "template.parameters",
        ),
        // Channel names are case-sensitive.
        (
            json!({"to": ["+14155550123"], "template": {"id": "t"}, "channel": ["SMS"]}),
            None,
            "VALIDATION_004",
            "channel",
        ),
        (
            json!({"to": ["+14155550123"], "template": {"id": "t"}, "channels": {"sent": []}}),
            None,
            "VALIDATION_004",
            "channels",
        ),
        // id and name are mutually exclusive; template and text too.
        (
            json!({"to": ["+14155550123"], "template": {"id": "t", "name": "welcome"}}),
            None,
            "VALIDATION_003",
            "template",
        ),
        (
            json!({"to": ["+14155550123"], "template": {"id": "t"}, "text": "hi"}),
            None,
            "VALIDATION_003",
            "text",
        ),
        // Media must be https, and mms needs some.
        (
            json!({"to": ["+14155550123"], "text": "hi", "media_urls": ["http://cdn.example.com/a.jpg"]}),
            None,
            "VALIDATION_001",
            "media_urls",
        ),
        (
            json!({"to": ["+14155550123"], "text": "hi", "channel": ["mms"]}),
            None,
            "VALIDATION_001",
            "media_urls",
        ),
        (
            json!({"to": ["+14155550123"], "template": {"id": "t"}, "channel": ["mms"], "media_urls": []}),
            None,
            "VALIDATION_001",
            "media_urls",
        ),
    ];
    for (request, key, code, field) in cases {
        let (status, headers, json) = parts(send(&client, &sim, &request, key).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}");
        assert_eq!(json["error"]["code"], code, "{request}: {json}");
        assert!(
            json["error"]["details"][field]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "{request}: {json}"
        );
        assert_eq!(json["meta"]["version"], "v3");
        assert!(headers.contains_key("x-ratelimit-limit"));
    }
    // Not JSON at all.
    let raw = client
        .post(format!("{}/v3/messages", sim.base_url()))
        .header("x-api-key", KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(parts(raw).await.2["error"]["code"], "VALIDATION_001");
    // Over the 2 MiB body limit: still the envelope.
    let huge = client
        .post(format!("{}/v3/messages", sim.base_url()))
        .header("x-api-key", KEY)
        .body(vec![b' '; 3 << 20])
        .send()
        .await
        .unwrap();
    let (status, _, json) = parts(huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json["error"]["code"], "VALIDATION_001");
    let stats = sim.stats();
    assert_eq!(stats.messages_created, 0);
    assert_eq!(stats.accepted_requests, 0);
}

#[tokio::test]
async fn accepted_send_has_the_v3_envelope_and_headers() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let request = json!({
        "to": ["+14155550123", "+14155550124"],
        "template": {"id": "tmpl_1", "parameters": {"name": "Ada"}},
        "channel": ["sms", "whatsapp"],
    });
    let (status, headers, json) = parts(send(&client, &sim, &request, Some("k-1")).await).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    for header in [
        "x-request-id",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(headers.contains_key(header), "{header}");
    }
    assert!(!headers.contains_key("idempotent-replayed"));
    assert!(!headers.contains_key("x-sandbox"));
    assert_eq!(json["success"], true);
    assert!(json["error"].is_null() && json.get("error").is_some());
    assert_eq!(json["meta"]["version"], "v3");
    assert_eq!(
        json["meta"]["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(json["meta"]["timestamp"].as_str().unwrap()).is_ok()
    );

    let data = &json["data"];
    assert_eq!(
        keys(data),
        ["recipients", "status", "template_id", "template_name"]
    );
    assert_eq!(data["status"], "QUEUED");
    assert_eq!(data["template_id"], "tmpl_1");
    assert!(
        data["template_name"].is_null(),
        "a send by id names no template"
    );
    let recipients = data["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 4, "one message per recipient and channel");
    let mut pairs: Vec<(&str, &str)> = recipients
        .iter()
        .map(|r| (r["to"].as_str().unwrap(), r["channel"].as_str().unwrap()))
        .collect();
    pairs.sort_unstable();
    assert_eq!(
        pairs,
        [
            ("+14155550123", "sms"),
            ("+14155550123", "whatsapp"),
            ("+14155550124", "sms"),
            ("+14155550124", "whatsapp"),
        ]
    );
    for recipient in recipients {
        assert!(uuid::Uuid::parse_str(recipient["message_id"].as_str().unwrap()).is_ok());
        assert_eq!(recipient["body"], "Template tmpl_1 (name=Ada)");
    }

    // Omitted channel, or `sent`: Sent picks, and says so with nulls.
    let (_, _, json) = parts(send(&client, &sim, &body("+14155550125"), None).await).await;
    let recipient = &json["data"]["recipients"][0];
    assert!(
        recipient["channel"].is_null() && recipient["body"].is_null(),
        "{json}"
    );
    assert_eq!(recipient["to"], "+14155550125");
    assert_eq!(json["data"]["template_name"], "welcome");
    // Free text needs no template.
    let text = json!({"to": ["+14155550126"], "text": "hello", "channel": ["sent"]});
    let (status, _, json) = parts(send(&client, &sim, &text, None).await).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let recipient = &json["data"]["recipients"][0];
    assert!(
        recipient["channel"].is_null() && recipient["body"].is_null(),
        "{json}"
    );
    assert!(json["data"]["template_id"].is_null());

    let stats = sim.stats();
    assert_eq!(stats.accepted_requests, 3);
    assert_eq!(stats.messages_created, 6);
    assert_eq!(stats.sends_without_idempotency_key, 2);
    assert_eq!(stats.distinct_idempotency_keys, 1);
}

#[tokio::test]
async fn get_message_follows_the_lifecycle() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let (_, _, json) = parts(send(&client, &sim, &body("+14155550123"), None).await).await;
    let id = first_id(&json);
    let fetch = || async {
        let response = get_message(&client, &sim, &id, KEY).await;
        assert_eq!(response.status(), StatusCode::OK);
        let json: Value = response.json().await.unwrap();
        json["data"].clone()
    };
    wait_for(10, "DELIVERED", || async {
        fetch().await["status"] == "DELIVERED"
    })
    .await;
    let info = fetch().await;
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["phone"], "+14155550123");
    assert_eq!(info["channel"], "sms", "the channel Sent picked");
    assert_eq!(info["direction"], "outbound");
    assert_eq!(info["template_name"], "welcome");
    assert_eq!(
        info["message_body"]["content"],
        "Template welcome (name=Ada)"
    );
    assert!(info["message_body"]["media"].is_null());
    assert!(chrono::DateTime::parse_from_rfc3339(info["created_at"].as_str().unwrap()).is_ok());
    assert!(info.get("reason_code").is_none() && info.get("scheduled_at").is_none());
    let history: Vec<&str> = info["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["QUEUED", "ROUTED", "SENT", "DELIVERED"]);

    for unknown in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let (status, _, json) = parts(get_message(&client, &sim, &unknown, KEY).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json["error"]["code"], "RESOURCE_001");
    }
}

#[tokio::test]
async fn idempotent_repeat_is_replayed_from_cache() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let first = send(&client, &sim, &body("+14155550123"), Some("order-17")).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first_body = first.text().await.unwrap();

    let again = send(&client, &sim, &body("+14155550123"), Some("order-17")).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.text().await.unwrap(),
        first_body,
        "same body, same message ids"
    );

    let stats = sim.stats();
    assert_eq!(stats.accepted_requests, 1);
    assert_eq!(stats.messages_created, 1);
    assert_eq!(stats.idempotent_replays, 1);
    assert_eq!(stats.distinct_idempotency_keys, 1);
    assert_eq!(stats.accepted_twice, 0);
}

#[tokio::test]
async fn failed_requests_are_not_cached() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let bad = json!({"to": ["nope"], "template": {"id": "t"}});
    assert_eq!(
        send(&client, &sim, &bad, Some("k")).await.status(),
        StatusCode::BAD_REQUEST
    );
    let good = send(&client, &sim, &body("+14155550123"), Some("k")).await;
    assert_eq!(good.status(), StatusCode::ACCEPTED);
    assert!(!good.headers().contains_key("idempotent-replayed"));
}

#[tokio::test]
async fn concurrent_duplicate_gets_409_conflict() {
    let sim = start(SimConfig::default()).await;
    // A slow answer keeps the first request in flight.
    sim.set_faults(sent_sim::Faults {
        slow: 1.0,
        slow_ms: 1_000,
        ..Default::default()
    });
    let client = client();
    let request = body("+14155550123");
    let first = send(&client, &sim, &request, Some("dup-1"));
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send(&client, &sim, &request, Some("dup-1")).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let (status, _, json) = parts(second).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(json["error"]["code"], "CONFLICT_001");

    sim.set_faults(sent_sim::Faults::default());
    let third = send(&client, &sim, &request, Some("dup-1")).await;
    assert_eq!(third.headers()["idempotent-replayed"], "true");
    let stats = sim.stats();
    assert_eq!(stats.conflicts, 1);
    assert_eq!(stats.messages_created, 1);
    assert_eq!(stats.accepted_twice, 0);
}

#[tokio::test]
async fn expired_key_accepted_again_is_counted_as_accepted_twice() {
    let config = SimConfig {
        idempotency_ttl: Duration::from_millis(100),
        ..SimConfig::default()
    };
    let sim = start(config).await;
    let client = client();
    assert_eq!(
        send(&client, &sim, &body("+14155550123"), Some("k"))
            .await
            .status(),
        202
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = send(&client, &sim, &body("+14155550123"), Some("k")).await;
    assert_eq!(again.status(), 202);
    assert!(!again.headers().contains_key("idempotent-replayed"));
    let stats = sim.stats();
    assert_eq!(stats.accepted_twice, 1);
    assert_eq!(stats.distinct_idempotency_keys, 1);
    assert_eq!(stats.messages_created, 2);
}

#[tokio::test]
async fn sandbox_validates_and_answers_without_side_effects() {
    let receiver = support::Receiver::start().await;
    let config = SimConfig {
        webhook_url: Some(receiver.url.clone()),
        ..SimConfig::default()
    };
    let sim = start(config).await;
    let client = client();
    let mut request = body("+14155550123");
    request["sandbox"] = json!(true);
    let (status, headers, json) = parts(send(&client, &sim, &request, Some("sb-1")).await).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers["x-sandbox"], "true");
    assert_eq!(json["data"]["status"], "QUEUED");
    let id = first_id(&json);

    // Same key again: not a replay (nothing was cached).
    let again = send(&client, &sim, &request, Some("sb-1")).await;
    assert!(!again.headers().contains_key("idempotent-replayed"));
    // Still validated.
    let mut invalid = request.clone();
    invalid["to"] = json!(["123"]);
    assert_eq!(
        send(&client, &sim, &invalid, None).await.status(),
        StatusCode::BAD_REQUEST
    );

    let fetched = get_message(&client, &sim, &id, KEY).await;
    assert_eq!(fetched.status(), StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.deliveries().is_empty(),
        "no webhooks for sandbox sends"
    );
    let stats = sim.stats();
    assert_eq!(stats.sandbox_requests, 2);
    assert_eq!(stats.messages_created, 0);
    assert_eq!(stats.accepted_requests, 0);
    assert_eq!(stats.distinct_idempotency_keys, 0);
}

#[tokio::test]
async fn magic_templates_trigger_every_permanent_error() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let cases = [
        ("sim_not_found", 404, "RESOURCE_002"),
        ("sim_unapproved", 422, "BUSINESS_005"),
        ("sim_no_balance", 422, "BUSINESS_003"),
        ("sim_opted_out", 422, "BUSINESS_004"),
        ("sim_channel_unavailable", 422, "BUSINESS_007"),
        ("sim_quota", 422, "BUSINESS_008"),
        ("sim_forbidden", 403, "AUTH_004"),
        ("sim_limit", 429, "LIMIT_001"),
    ];
    for (magic, status, code) in cases {
        for template in [json!({"id": magic}), json!({"name": magic})] {
            let request = json!({"to": ["+14155550123"], "template": template});
            let response = send(&client, &sim, &request, Some(magic)).await;
            assert!(!response.headers().contains_key("retry-after"), "{magic}");
            let (got, _, json) = parts(response).await;
            assert_eq!(got.as_u16(), status, "{magic}");
            assert_eq!(json["error"]["code"], code, "{magic}");
            assert_eq!(json["success"], false);
        }
    }
    assert_eq!(sim.stats().messages_created, 0);
}

#[tokio::test]
async fn real_rate_limit_answers_429_with_retry_after() {
    let config = SimConfig {
        messages_per_minute: 3,
        ..SimConfig::default()
    };
    let sim = start(config).await;
    let client = client();
    for n in 0..3 {
        let response = send(&client, &sim, &body("+14155550123"), None).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(response.headers()["x-ratelimit-limit"], "3");
        assert_eq!(
            response.headers()["x-ratelimit-remaining"],
            (2 - n).to_string().as_str()
        );
    }
    let limited = send(&client, &sim, &body("+14155550123"), Some("later")).await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let (status, _, json) = parts(limited).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json["error"]["code"], "BUSINESS_002");
    // The refused key was released: a later retry is not a 409.
    let retry = send(&client, &sim, &body("+14155550123"), Some("later")).await;
    assert_eq!(retry.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sim.stats().rate_limited, 2);
}

#[tokio::test]
async fn stats_endpoint_health_and_unknown_routes() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    send(&client, &sim, &body("+14155550123"), Some("a")).await;
    send(&client, &sim, &body("+14155550123"), Some("a")).await;
    send(&client, &sim, &body("+14155550124"), Some("b")).await;
    send(&client, &sim, &body("+14155550125"), None).await;

    let stats: Stats = client
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, sim.stats());
    assert_eq!(stats.requests, 4);
    assert_eq!(stats.send_requests, 4);
    assert_eq!(stats.accepted_requests, 3);
    assert_eq!(stats.messages_created, 3);
    assert_eq!(stats.distinct_idempotency_keys, 2);
    assert_eq!(stats.idempotent_replays, 1);
    assert_eq!(stats.sends_without_idempotency_key, 1);
    assert_eq!(stats.accepted_twice, 0);
    assert_eq!(stats.conflicts, 0);

    let health = client
        .get(format!("{}/health", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let unknown = client
        .get(format!("{}/v3/nothing", sim.base_url()))
        .send()
        .await
        .unwrap();
    let (status, _, json) = parts(unknown).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json["success"], false);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sim = start(SimConfig::default()).await;
    let url = format!("{}/health", sim.base_url());
    assert!(
        client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    sim.shutdown().await;
    assert!(client().get(&url).send().await.is_err());
}

#[tokio::test]
async fn fields_sent_does_not_define_are_refused_and_counted() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let request = json!({
        "to": ["+14155550123"],
        "template": {"id": "t", "variables": {"a": "b"}},
        "priority": "high",
    });
    let (status, _, json) = parts(send(&client, &sim, &request, None).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["error"]["code"], "VALIDATION_001");
    for field in ["priority", "template.variables"] {
        assert!(
            json["error"]["details"][field].is_array(),
            "{field}: {json}"
        );
    }
    let entry = json!({"to": ["+14155550123"], "template": {"id": "t"},
                       "channels": {"sms": [{"from": ["+12125550000"], "weight": 2}]}});
    let (status, _, json) = parts(send(&client, &sim, &entry, None).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json["error"]["details"]["channels.sms[0].weight"].is_array(),
        "{json}"
    );
    let stats = sim.stats();
    assert_eq!(stats.unknown_fields, 3);
    assert_eq!(stats.messages_created, 0);
    // Every key Sent defines, null where it may be: accepted, nothing counted.
    let full = json!({
        "to": ["+14155550123"], "template": {"id": "t", "name": null, "parameters": null},
        "channel": null, "channels": {"sms": [{"country": "US", "from": ["+12125550000"], "strategy": null}]},
        "text": null, "scheduled_at": null, "sandbox": false, "media_urls": null, "subject": null,
    });
    let (status, _, json) = parts(send(&client, &sim, &full, None).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    let stats: Stats = client
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.unknown_fields, 3);
}

#[tokio::test]
async fn mms_with_https_media_is_accepted_and_shown_by_get() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let request = json!({"to": ["+14155550123"], "text": "look", "subject": "Hi",
                         "channel": ["mms"], "media_urls": ["https://cdn.example.com/a.jpg"]});
    let (status, _, json) = parts(send(&client, &sim, &request, None).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    let recipient = &json["data"]["recipients"][0];
    assert_eq!(recipient["channel"], "mms");
    assert_eq!(recipient["body"], "look");
    let (_, _, info) = parts(get_message(&client, &sim, &first_id(&json), KEY).await).await;
    assert_eq!(
        info["data"]["message_body"],
        json!({"content": "look", "subject": "Hi", "media": [{"url": "https://cdn.example.com/a.jpg"}]})
    );
}

#[tokio::test]
async fn get_of_a_blocked_message_carries_its_reason() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let (_, _, json) = parts(send(&client, &sim, &body("+14155559999"), None).await).await;
    let id = first_id(&json);
    let fetch = || async { parts(get_message(&client, &sim, &id, KEY).await).await.2 };
    wait_for(10, "BLOCKED", || async {
        fetch().await["data"]["status"] == "BLOCKED"
    })
    .await;
    let data = fetch().await["data"].clone();
    assert_eq!(data["reason_code"], "BUSINESS_029");
    assert!(data["reason"].is_string());
    let events = data["events"].as_array().unwrap();
    assert!(
        events[0].get("reason_code").is_none(),
        "QUEUED needs no reason"
    );
    assert_eq!(events[1]["status"], "BLOCKED");
    assert_eq!(events[1]["reason_code"], "BUSINESS_029");
}

#[tokio::test]
async fn null_optionals_setting_nulls_all_but_the_ids() {
    let sim = start(SimConfig {
        null_optionals: true,
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let request =
        json!({"to": ["+14155550123"], "template": {"id": "t"}, "channel": ["sms", "sent"]});
    let (status, headers, json) = parts(send(&client, &sim, &request, None).await).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(headers.contains_key("x-request-id"));
    assert!(json["success"].is_null() && json["meta"].is_null() && json["error"].is_null());
    let data = &json["data"];
    for key in ["status", "template_id", "template_name"] {
        assert!(
            data[key].is_null() && data.get(key).is_some(),
            "{key}: {json}"
        );
    }
    let recipients = data["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 2);
    for recipient in recipients {
        assert!(recipient["message_id"].is_string());
        for key in ["to", "channel", "body"] {
            assert!(
                recipient[key].is_null() && recipient.get(key).is_some(),
                "{key}"
            );
        }
    }
    let bad = json!({"to": ["nope"], "template": {"id": "t"}});
    let (status, _, json) = parts(send(&client, &sim, &bad, None).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["error"]["code"], "VALIDATION_002");
    assert!(json["error"]["details"].is_null() && json["error"]["doc_url"].is_null());
    assert!(json["success"].is_null() && json["meta"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_mode_appends_one_json_line_per_v3_exchange() {
    let dir = std::env::temp_dir().join(format!("sent-sim-record-{}", uuid::Uuid::new_v4()));
    let path = dir.join("exchanges.jsonl");
    let sim = start(SimConfig {
        record: Some(path.clone()),
        ..SimConfig::default()
    })
    .await;
    assert_eq!(sim.record_path(), Some(path.as_path()));
    let client = client();
    // Concurrent sends: each line stays whole.
    let sends = (0..20).map(|n| {
        let client = client.clone();
        let sim = &sim;
        async move {
            send(
                &client,
                sim,
                &body(&format!("+1415555{:04}", 1000 + n)),
                Some(&format!("rec-{n}")),
            )
            .await
        }
    });
    let answers = futures::future::join_all(sends).await;
    let id = first_id(&parts(answers.into_iter().next().unwrap()).await.2);
    get_message(&client, &sim, &id, KEY).await;
    client
        .post(format!("{}/v3/messages", sim.base_url()))
        .header("x-api-key", KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    // Not /v3: not recorded.
    client
        .get(format!("{}/health", sim.base_url()))
        .send()
        .await
        .unwrap();
    client
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 22, "{text}");
    let sends: Vec<&Value> = lines
        .iter()
        .filter(|l| l["method"] == "POST" && l["request"].is_object())
        .collect();
    assert_eq!(sends.len(), 20);
    for line in &sends {
        assert_eq!(line["path"], "/v3/messages");
        assert_eq!(line["status"], 202);
        assert_eq!(line["headers"]["x-api-key"], "<redacted>");
        assert!(
            line["headers"]["idempotency-key"]
                .as_str()
                .unwrap()
                .starts_with("rec-")
        );
        assert_eq!(line["request"]["template"]["name"], "welcome");
        assert_eq!(line["response"]["data"]["status"], "QUEUED");
        assert!(line.get("request_raw").is_none());
    }
    assert!(!text.contains(KEY), "the API key never reaches the file");
    let get = lines.iter().find(|l| l["method"] == "GET").unwrap();
    assert_eq!(get["path"], format!("/v3/messages/{id}"));
    assert_eq!(get["status"], 200);
    assert!(get["request"].is_null());
    assert_eq!(get["response"]["data"]["id"], id.as_str());
    let raw = lines
        .iter()
        .find(|l| l.get("request_raw").is_some())
        .unwrap();
    assert_eq!(raw["request_raw"], "{not json");
    assert!(raw["request"].is_null());
    assert_eq!(raw["status"], 400);
    assert_eq!(raw["response"]["error"]["code"], "VALIDATION_001");
    std::fs::remove_dir_all(&dir).unwrap();
}
