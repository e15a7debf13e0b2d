//! The submission path over HTTP, against real Postgres and Redis: the
//! original Flask suite's cases and what the contract adds.

mod support;

use common::domain::{Channel, MessageStatus};
use serde_json::{Value, json};
use support::{API_KEY, OTHER_KEY, TestApp, send_body, split};

#[tokio::test]
async fn send_message_success_is_accepted_stored_and_queued() {
    let app = TestApp::spawn(&[]).await;
    let (status, headers, body) = app.post_json("/api/messages/send", &send_body()).await;
    assert_eq!(status, 202, "{body}");
    let id = body["message_id"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "queued");
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(headers["location"], format!("/api/messages/{id}").as_str());

    // Durable in Postgres before the 202...
    let stored = app
        .db
        .store
        .message("tester", id.parse().unwrap())
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.phone_number.as_str(), "+1234567890");
    assert_eq!(stored.parameters, json!({"name": "John"}));
    assert_eq!(stored.status, MessageStatus::Queued);
    // ...and its job in Redis, with the versioned payload.
    let jobs = app.queued_jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["version"], "1");
    assert_eq!(jobs[0]["message_id"], id.as_str());
}

#[tokio::test]
async fn send_message_invalid_phone_is_400_naming_the_field() {
    let app = TestApp::spawn(&[]).await;
    let body = json!({"phone_number": "invalid", "template_id": "template-123", "template_name": "welcome"});
    let (status, _, body) = app.post_json("/api/messages/send", &body).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "Validation error");
    assert_eq!(body["code"], "validation_error");
    assert_eq!(
        body["messages"]["phone_number"],
        json!(["E.164 format required"])
    );
    assert!(app.queued_jobs().await.is_empty());
}

/// A `callback_url` whose host is inside the network (as an address in any
/// spelling, or `localhost`) would make the workers POST there: 400, unless
/// the operator allows that network (`CALLBACK_ALLOW_PRIVATE_NETWORKS`).
#[tokio::test]
async fn callback_urls_inside_the_network_are_refused_unless_allowed() {
    let inside = [
        "http://127.0.0.1:9/x",
        "http://[::1]/",
        "http://169.254.169.254/latest",
        "http://10.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost/",
        "http://2130706433/",
        "http://0x7f.1/",
    ];
    let with_callback = |url: &str| {
        let mut body = send_body();
        body["callback_url"] = json!(url);
        body
    };
    let app = TestApp::spawn(&[]).await;
    for url in inside {
        let (status, _, body) = app
            .post_json("/api/messages/send", &with_callback(url))
            .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["code"], "validation_error");
        assert_eq!(
            body["messages"]["callback_url"],
            json!(["Must not point at a private, loopback or link-local address."]),
            "{url}"
        );
    }
    // In a batch, the item is refused, naming the field.
    let (status, _, body) = app
        .post_json(
            "/api/messages/batch",
            &json!({"messages": [with_callback("http://169.254.169.254/latest"), send_body()]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(
        body["results"][0]["messages"]["callback_url"].is_array(),
        "{body}"
    );
    assert_eq!(body["results"][1]["status"], "queued");
    // A public name is not resolved here (the worker checks it on delivery).
    let (status, _, body) = app
        .post_json(
            "/api/messages/send",
            &with_callback("https://client.example/hook"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(app.queued_jobs().await.len(), 2);

    let allowed = TestApp::spawn(&[(
        "CALLBACK_ALLOW_PRIVATE_NETWORKS",
        "127.0.0.0/8,::1/128,169.254.169.254/32,10.0.0.0/8",
    )])
    .await;
    for url in inside {
        let (status, _, body) = allowed
            .post_json("/api/messages/send", &with_callback(url))
            .await;
        assert_eq!(status, 202, "{url}: {body}");
    }
    // Only what is listed: 192.168/16 is not.
    let (status, _, body) = allowed
        .post_json("/api/messages/send", &with_callback("http://192.168.1.1/"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["messages"]["callback_url"].is_array());
}

#[tokio::test]
async fn send_message_missing_fields_is_400() {
    let app = TestApp::spawn(&[]).await;
    let (status, _, body) = app.post_json("/api/messages/send", &json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["messages"]["phone_number"],
        json!(["Missing data for required field."])
    );
    assert!(body["messages"]["template_id"].is_array());
}

#[tokio::test]
async fn welcome_uses_the_welcome_template_on_whatsapp() {
    let app = TestApp::spawn(&[]).await;
    let (status, _, body) = app
        .post_json(
            "/api/messages/welcome",
            &json!({"phone_number": "+1234567890", "name": "Jane"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let stored = app
        .db
        .store
        .message(
            "tester",
            body["message_id"].as_str().unwrap().parse().unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.template_name.as_deref(), Some("welcome"));
    assert_eq!(stored.template_id.as_deref(), Some("welcome-template-id"));
    assert_eq!(stored.channels, vec![Channel::Whatsapp]);
    assert_eq!(stored.parameters, json!({"name": "Jane"}));

    let (_, _, body) = app
        .post_json(
            "/api/messages/welcome",
            &json!({"phone_number": "+1234567890"}),
        )
        .await;
    let stored = app
        .db
        .store
        .message(
            "tester",
            body["message_id"].as_str().unwrap().parse().unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.parameters, json!({"name": "Valued Customer"}));
}

#[tokio::test]
async fn order_confirmation_goes_on_sms_and_whatsapp() {
    let app = TestApp::spawn(&[]).await;
    let (status, _, body) = app
        .post_json(
            "/api/messages/order-confirmation",
            &json!({"phone_number": "+14155550123", "order_number": "A-17", "total": "$12.00"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let stored = app
        .db
        .store
        .message(
            "tester",
            body["message_id"].as_str().unwrap().parse().unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.template_name.as_deref(), Some("order_confirmation"));
    assert_eq!(stored.channels, vec![Channel::Sms, Channel::Whatsapp]);
    assert_eq!(
        stored.parameters,
        json!({"order_number": "A-17", "total": "$12.00"})
    );

    let (status, _, body) = app
        .post_json(
            "/api/messages/order-confirmation",
            &json!({"phone_number": "+14155550123"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["messages"]["order_number"].is_array() && body["messages"]["total"].is_array());
}

#[tokio::test]
async fn api_key_is_required_and_scopes_messages() {
    let app = TestApp::spawn(&[]).await;
    let url = app.url("/api/messages/send");
    for request in [
        app.http.post(&url).json(&send_body()),
        app.http
            .post(&url)
            .bearer_auth("wrong-key-123456")
            .json(&send_body()),
        app.http.get(app.url("/api/messages")),
    ] {
        let (status, _, body) = split(request.send().await.unwrap()).await;
        assert_eq!(status, 401);
        assert_eq!(body["code"], "unauthorized");
    }
    // X-API-Key works too.
    let response = app
        .http
        .post(&url)
        .header("X-API-Key", API_KEY)
        .json(&send_body())
        .send()
        .await
        .unwrap();
    let (status, _, body) = split(response).await;
    assert_eq!(status, 202);
    // Another client cannot see it.
    let id = body["message_id"].as_str().unwrap();
    let response = app
        .http
        .get(app.url(&format!("/api/messages/{id}")))
        .bearer_auth(OTHER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn managed_keys_work_until_revoked() {
    let app = TestApp::spawn(&[]).await;
    let key = gateway::cli::generate_key();
    app.db
        .store
        .create_api_key(&common::store::NewApiKey {
            name: "managed".into(),
            key_hash: gateway::auth::hash_key(&key).to_vec(),
            key_prefix: key[..8].into(),
            callback_secret: "whsec_x".into(),
            rate_limit: None,
        })
        .await
        .unwrap();
    let response = app
        .http
        .post(app.url("/api/messages/send"))
        .bearer_auth(&key)
        .json(&send_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let stored = app.db.store.api_keys().await.unwrap();
    assert_eq!(stored[0].key_prefix, &key[..8]);
    assert!(app.db.store.revoke_api_key("managed").await.unwrap());
    // A fresh key ring (another gateway, or after the cache expires) refuses it.
    let ring = gateway::auth::KeyRing::new(&[], app.db.store.clone());
    assert!(ring.authenticate(&key).await.is_err());
}

#[tokio::test]
async fn idempotent_repeat_returns_the_first_answer_and_a_changed_body_conflicts() {
    let app = TestApp::spawn(&[]).await;
    let send = |body: Value| {
        app.post("/api/messages/send")
            .header("Idempotency-Key", "order-17")
            .json(&body)
            .send()
    };
    let (s1, h1, first) = split(send(send_body()).await.unwrap()).await;
    let (s2, h2, second) = split(send(send_body()).await.unwrap()).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first, second);
    assert!(h1.get("idempotent-replayed").is_none());
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(h2["location"], h1["location"]);
    assert_eq!(
        app.queued_jobs().await.len(),
        1,
        "a repeat sends nothing new"
    );

    let mut changed = send_body();
    changed["parameters"]["name"] = json!("Someone else");
    let (status, _, body) = split(send(changed).await.unwrap()).await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "idempotency_conflict");

    // Keys are scoped to the API key: another client may use the same one.
    let response = app
        .http
        .post(app.url("/api/messages/send"))
        .bearer_auth(OTHER_KEY)
        .header("Idempotency-Key", "order-17")
        .json(&send_body())
        .send()
        .await
        .unwrap();
    let (status, _, other) = split(response).await;
    assert_eq!(status, 202);
    assert_ne!(other["message_id"], first["message_id"]);
}

#[tokio::test]
async fn concurrent_duplicates_store_one_message() {
    let app = TestApp::spawn(&[]).await;
    let requests = (0..24).map(|_| {
        app.post("/api/messages/send")
            .header("Idempotency-Key", "same-key")
            .json(&send_body())
            .send()
    });
    let responses = futures::future::join_all(requests).await;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        let (status, _, body) = split(response.unwrap()).await;
        assert_eq!(status, 202, "{body}");
        ids.insert(body["message_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(app.queued_jobs().await.len(), 1);
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages")
        .fetch_one(app.db.store.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn batch_accepts_good_items_and_reports_bad_ones_in_order() {
    let app = TestApp::spawn(&[]).await;
    let batch = json!({"messages": [
        send_body(),
        {"phone_number": "0123", "template_name": "x"},
        {"phone_number": "+14155550123", "template_name": "promo", "channels": ["sms", "fax"]},
        {"phone_number": "+14155550124", "template_id": "t-2", "channels": ["rcs"]},
        "not an object",
    ]});
    let (status, _, body) = app.post_json("/api/messages/batch", &batch).await;
    assert_eq!(status, 202, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0]["status"], "queued");
    assert_eq!(results[1]["code"], "validation_error");
    assert_eq!(
        results[1]["messages"]["phone_number"],
        json!(["E.164 format required"])
    );
    assert!(results[2]["messages"]["channels.1"].is_array());
    assert_eq!(results[3]["status"], "queued");
    assert_eq!(results[4]["code"], "validation_error");
    // Jobs for the two good items only; same-millisecond ULIDs need not sort
    // by creation, so compare as sets.
    let queued: std::collections::BTreeSet<String> = app
        .queued_jobs()
        .await
        .iter()
        .map(|j| j["message_id"].as_str().unwrap().to_owned())
        .collect();
    let expected: std::collections::BTreeSet<String> = [0, 3]
        .iter()
        .map(|&i| results[i]["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(queued, expected);

    let (status, _, body) = app
        .post_json("/api/messages/batch", &json!({"messages": []}))
        .await;
    assert_eq!(status, 400);
    assert!(body["messages"]["messages"].is_array());
    let too_many: Vec<Value> = (0..1001).map(|_| send_body()).collect();
    let (status, _, _) = app
        .post_json("/api/messages/batch", &json!({"messages": too_many}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_batch_counts_each_message_against_the_rate_limit() {
    let app = TestApp::spawn(&[
        ("RATELIMIT_ENABLED", "true"),
        ("RATELIMIT_MESSAGES", "5/minute"),
    ])
    .await;
    let batch = |n: usize| json!({"messages": (0..n).map(|_| send_body()).collect::<Vec<_>>()});
    let (status, _, body) = app.post_json("/api/messages/batch", &batch(3)).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "queued")
    );

    // Two of five left: the first two valid items are queued, the others
    // refused one by one; an invalid item takes nothing.
    let mut items: Vec<Value> = (0..4).map(|_| send_body()).collect();
    items.insert(1, json!({"phone_number": "0123", "template_name": "x"}));
    let (status, _, body) = app
        .post_json("/api/messages/batch", &json!({"messages": items}))
        .await;
    assert_eq!(status, 202, "{body}");
    let codes: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().or(r["code"].as_str()).unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "queued",
            "validation_error",
            "queued",
            "rate_limited",
            "rate_limited"
        ]
    );
    assert!(body["results"][3]["retry_after"].as_u64().unwrap() >= 1);
    assert_eq!(app.queued_jobs().await.len(), 5);

    // No room at all: the whole batch is 429, and so is a single send.
    let response = app
        .post("/api/messages/batch")
        .json(&batch(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let (status, _, _) = app.post_json("/api/messages/send", &send_body()).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn batch_with_idempotency_key_replays_the_whole_answer() {
    let app = TestApp::spawn(&[]).await;
    let batch = json!({"messages": [send_body(), send_body()]});
    let send = || {
        app.post("/api/messages/batch")
            .header("Idempotency-Key", "batch-1")
            .json(&batch)
            .send()
    };
    let (_, _, first) = split(send().await.unwrap()).await;
    let (status, headers, second) = split(send().await.unwrap()).await;
    assert_eq!(status, 202);
    assert_eq!(first, second);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(app.queued_jobs().await.len(), 2);
}

#[tokio::test]
async fn status_reads_show_the_timeline_and_page_newest_first() {
    let app = TestApp::spawn(&[]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, _, body) = app.post_json("/api/messages/send", &send_body()).await;
        ids.push(body["message_id"].as_str().unwrap().to_owned());
    }
    let (status, _, one) = split(
        app.get(&format!("/api/messages/{}", ids[0]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["status"], "queued");
    assert_eq!(one["template_name"], "welcome");
    assert_eq!(one["attempts"], 0);
    assert_eq!(one["events"][0]["status"], "queued");
    assert_eq!(one["events"][0]["source"], "gateway");

    let (_, _, page) = split(app.get("/api/messages?limit=2").send().await.unwrap()).await;
    let listed: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[4].as_str(), ids[3].as_str()]);
    assert!(page["messages"][0].get("events").is_none());
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, _, rest) = split(
        app.get(&format!("/api/messages?limit=10&cursor={cursor}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(rest["messages"].as_array().unwrap().len(), 3);
    assert!(rest["next_cursor"].is_null());

    let (_, _, filtered) = split(
        app.get("/api/messages?status=delivered")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(filtered["messages"].as_array().unwrap().is_empty());
    let (status, _, bad) = split(
        app.get("/api/messages?status=lost&limit=0")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(bad["messages"]["status"].is_array() && bad["messages"]["limit"].is_array());
    let (status, _, _) = split(
        app.get("/api/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = split(app.get("/api/messages/not-an-id").send().await.unwrap()).await;
    assert_eq!(status, 404);
}
