//! Lifecycle webhooks: order, signatures, envelope, outcomes, retries.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use sent_sim::SimConfig;
use serde_json::json;
use support::{Receiver, SECRET, body, client, keys, parts, send, start, wait_for};

fn config(receiver: &Receiver) -> SimConfig {
    SimConfig {
        webhook_url: Some(receiver.url.clone()),
        step_delay: Duration::from_millis(10),
        ..SimConfig::default()
    }
}

async fn message_id(response: reqwest::Response) -> String {
    let (status, _, json) = parts(response).await;
    assert_eq!(status, 202, "{json}");
    json["data"]["recipients"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn lifecycle_webhooks_arrive_in_order_and_verify() {
    let receiver = Receiver::start().await;
    let config = SimConfig {
        webhook_id: Some("3f2b8c1e-7d4a-4e2b-9c1a-5b6d7e8f9a0b".into()),
        ..config(&receiver)
    };
    let sim = start(config).await;
    let client = client();
    let id = message_id(send(&client, &sim, &body("+14155550123"), Some("w-1")).await).await;

    wait_for(10, "four events", || async {
        receiver.statuses(&id).len() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        receiver.statuses(&id),
        ["QUEUED", "ROUTED", "SENT", "DELIVERED"]
    );

    let deliveries = receiver.for_message(&id);
    let mut event_ids = HashSet::new();
    for delivery in &deliveries {
        delivery.verify(SECRET);
        assert_eq!(
            delivery.header("x-webhook-id"),
            "3f2b8c1e-7d4a-4e2b-9c1a-5b6d7e8f9a0b"
        );
        assert_eq!(delivery.header("content-type"), "application/json");
        assert!(delivery.header("x-webhook-signature").starts_with("v1,"));
        let signed_at: i64 = delivery.header("x-webhook-timestamp").parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - signed_at).abs() < 60);
        assert!(
            event_ids.insert(delivery.event_id().to_owned()),
            "event ids are unique"
        );

        let envelope = delivery.envelope();
        assert_eq!(envelope["field"], "message");
        let payload = delivery.payload();
        let status = delivery.status();
        assert_eq!(
            envelope["event"],
            format!("message.{}", status.to_lowercase()).as_str()
        );
        assert!(envelope["timestamp"].is_string() && envelope["request_id"].is_string());
        assert_eq!(payload["channel"], "sms");
        assert_eq!(payload["outbound_number"], "+14155550123");
        assert_eq!(payload["template_name"], "welcome");
        assert!(payload["template_id"].is_string() && payload["account_id"].is_string());
        assert!(payload["updated_at"].is_string() && payload["body"].is_string());
        assert!(payload.get("reason_code").is_none());
        // Exactly the members of Sent's MessageEvent (current names).
        assert_eq!(
            keys(&envelope),
            ["event", "field", "payload", "request_id", "timestamp"]
        );
    }
    // A tampered body does not verify.
    assert!(!deliveries[0].signature_matches(SECRET, b"{}"));
    wait_for(5, "stats", || async { sim.stats().webhooks_delivered >= 4 }).await;
}

#[tokio::test]
async fn whatsapp_reaches_read_and_sms_never_does() {
    let receiver = Receiver::start().await;
    let config = SimConfig {
        read_rate: 1.0,
        ..config(&receiver)
    };
    let sim = start(config).await;
    let client = client();
    let request =
        json!({"to": ["+14155550123"], "template": {"id": "t"}, "channel": ["whatsapp", "sms"]});
    let (_, _, json) = parts(send(&client, &sim, &request, None).await).await;
    let recipients = json["data"]["recipients"].as_array().unwrap();
    let id_of = |channel: &str| {
        recipients.iter().find(|r| r["channel"] == channel).unwrap()["message_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (whatsapp, sms) = (id_of("whatsapp"), id_of("sms"));
    wait_for(10, "READ", || async {
        receiver.statuses(&whatsapp).len() >= 5
    })
    .await;
    wait_for(10, "DELIVERED", || async {
        receiver.statuses(&sms).len() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        receiver.statuses(&whatsapp),
        ["QUEUED", "ROUTED", "SENT", "DELIVERED", "READ"]
    );
    assert_eq!(
        receiver.statuses(&sms),
        ["QUEUED", "ROUTED", "SENT", "DELIVERED"]
    );
}

#[tokio::test]
async fn magic_numbers_end_failed_or_blocked() {
    let receiver = Receiver::start().await;
    let sim = start(config(&receiver)).await;
    let client = client();
    let failed = message_id(send(&client, &sim, &body("+14155550000"), None).await).await;
    let blocked = message_id(send(&client, &sim, &body("+14155559999"), None).await).await;
    let async_balance =
        json!({"to": ["+14155550123"], "template": {"name": "sim_async_no_balance"}});
    let no_balance = message_id(send(&client, &sim, &async_balance, None).await).await;

    wait_for(10, "FAILED", || async {
        receiver.statuses(&failed).last().map(String::as_str) == Some("FAILED")
    })
    .await;
    wait_for(10, "BLOCKED", || async {
        receiver.statuses(&blocked).len() == 2
    })
    .await;
    wait_for(10, "BLOCKED", || async {
        receiver.statuses(&no_balance).len() == 2
    })
    .await;

    assert_eq!(
        receiver.statuses(&failed),
        ["QUEUED", "ROUTED", "SENT", "FAILED"]
    );
    let last = receiver.for_message(&failed).pop().unwrap();
    assert_eq!(last.envelope()["event"], "message.failed");
    assert_eq!(last.payload()["reason_code"], "DELIVERY_007");
    assert!(last.payload()["reason"].is_string());

    assert_eq!(receiver.statuses(&blocked), ["QUEUED", "BLOCKED"]);
    let last = receiver.for_message(&blocked).pop().unwrap();
    assert_eq!(last.envelope()["event"], "message.blocked");
    assert_eq!(last.payload()["reason_code"], "BUSINESS_029");
    let last = receiver.for_message(&no_balance).pop().unwrap();
    assert_eq!(last.payload()["reason_code"], "BUSINESS_003");
}

#[tokio::test]
async fn fail_rate_one_fails_every_message() {
    let receiver = Receiver::start().await;
    let config = SimConfig {
        fail_rate: 1.0,
        ..config(&receiver)
    };
    let sim = start(config).await;
    let client = client();
    let id = message_id(send(&client, &sim, &body("+14155550123"), None).await).await;
    wait_for(10, "FAILED", || async {
        receiver.statuses(&id).last().map(String::as_str) == Some("FAILED")
    })
    .await;
    let statuses = receiver.statuses(&id);
    assert!(!statuses.contains(&"DELIVERED".to_owned()), "{statuses:?}");
}

#[tokio::test]
async fn failed_delivery_is_retried_with_the_same_event_id() {
    let receiver = Receiver::start().await;
    receiver.fail_first(2);
    let config = SimConfig {
        webhook_retry_base: Duration::from_millis(50),
        webhook_retries: 3,
        ..config(&receiver)
    };
    let sim = start(config).await;
    let client = client();
    let id = message_id(send(&client, &sim, &body("+14155550123"), None).await).await;
    wait_for(10, "all four delivered", || async {
        receiver.statuses(&id).len() >= 4
    })
    .await;

    let all = receiver.deliveries();
    let queued: Vec<_> = all
        .iter()
        .filter(|d| d.message_id() == id && d.status() == "QUEUED")
        .collect();
    assert_eq!(queued.len(), 3, "two refused attempts and one success");
    assert!(queued.iter().all(|d| d.event_id() == queued[0].event_id()));
    assert!(
        queued.iter().all(|d| d.body == queued[0].body),
        "retries resend the same body"
    );
    assert_eq!(queued[0].answered, 500);
    assert_eq!(queued[2].answered, 200);
    queued[2].verify(SECRET);
    let stats = sim.stats();
    assert!(stats.webhook_failures >= 8, "{stats:?}");
    assert_eq!(stats.webhooks_abandoned, 0);
}

#[tokio::test]
async fn delivery_is_abandoned_after_the_last_retry() {
    let receiver = Receiver::start().await;
    receiver.fail_first(usize::MAX);
    let config = SimConfig {
        webhook_retry_base: Duration::from_millis(20),
        webhook_retries: 2,
        ..config(&receiver)
    };
    let sim = start(config).await;
    let client = client();
    message_id(send(&client, &sim, &body("+14155559999"), None).await).await;
    // QUEUED and BLOCKED, three attempts each.
    wait_for(10, "abandoned", || async {
        sim.stats().webhooks_abandoned == 2
    })
    .await;
    assert_eq!(sim.stats().webhook_failures, 6);
    assert_eq!(receiver.deliveries().len(), 6);
}

#[tokio::test]
async fn unreachable_endpoint_counts_failures() {
    // A port nobody listens on: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    drop(listener);
    let config = SimConfig {
        webhook_url: Some(url),
        webhook_retries: 0,
        step_delay: Duration::from_millis(5),
        ..SimConfig::default()
    };
    let sim = start(config).await;
    message_id(send(&client(), &sim, &body("+14155550123"), None).await).await;
    wait_for(10, "failures", || async {
        sim.stats().webhook_failures == 4
    })
    .await;
    assert_eq!(sim.stats().webhooks_abandoned, 4);
}

#[tokio::test]
async fn webhook_url_can_be_set_at_runtime() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        step_delay: Duration::from_millis(10),
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let before = message_id(send(&client, &sim, &body("+14155550123"), None).await).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sim.set_webhook_url(Some(receiver.url.clone()));
    let after = message_id(send(&client, &sim, &body("+14155550124"), None).await).await;
    wait_for(10, "events", || async {
        receiver.statuses(&after).len() == 4
    })
    .await;
    assert!(receiver.statuses(&before).is_empty());

    // Also over HTTP.
    let response = client
        .post(format!("{}/_sim/webhook", sim.base_url()))
        .json(&json!({"url": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let silent = message_id(send(&client, &sim, &body("+14155550125"), None).await).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.statuses(&silent).is_empty());
}

#[tokio::test]
async fn scheduled_send_is_queued_then_scheduled_with_its_time() {
    let receiver = Receiver::start().await;
    let sim = start(config(&receiver)).await;
    let client = client();
    let at = chrono::Utc::now() + chrono::Duration::minutes(10);
    let mut request = body("+14155550123");
    request["scheduled_at"] = json!(at.to_rfc3339());
    let (status, _, json) = parts(send(&client, &sim, &request, None).await).await;
    assert_eq!(status, 202);
    assert_eq!(json["data"]["status"], "QUEUED");
    let echoed = json["data"]["scheduled_at"].as_str().unwrap();
    assert!(echoed.ends_with('Z'), "echoed in UTC: {echoed}");
    let id = json["data"]["recipients"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();

    wait_for(10, "message.scheduled", || async {
        !receiver.statuses(&id).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.statuses(&id), ["SCHEDULED"], "held until its time");
    let delivery = receiver.for_message(&id).pop().unwrap();
    delivery.verify(SECRET);
    assert_eq!(delivery.envelope()["event"], "message.scheduled");
    let scheduled_at = delivery.payload()["scheduled_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let parsed = chrono::DateTime::parse_from_rfc3339(&scheduled_at).unwrap();
    assert!((parsed.timestamp_millis() - at.timestamp_millis()).abs() < 1_000);

    let info = client
        .get(format!("{}/v3/messages/{id}", sim.base_url()))
        .header("x-api-key", support::KEY)
        .send()
        .await
        .unwrap();
    let (_, _, info) = parts(info).await;
    assert_eq!(info["data"]["status"], "SCHEDULED");
    assert_eq!(info["data"]["scheduled_at"], scheduled_at.as_str());
    assert_eq!(info["data"]["events"][0]["status"], "SCHEDULED");
}

#[tokio::test]
async fn sub_type_envelope_and_no_event_id_header_by_setting() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        webhook_envelope: sent_sim::WebhookEnvelope::SubType,
        webhook_event_id_header: false,
        ..config(&receiver)
    })
    .await;
    let id = message_id(send(&client(), &sim, &body("+14155550123"), None).await).await;
    wait_for(10, "four events", || async {
        receiver.statuses(&id).len() >= 4
    })
    .await;
    for delivery in receiver.for_message(&id) {
        delivery.verify(SECRET);
        assert!(!delivery.headers.contains_key("x-webhook-event-id"));
        let envelope = delivery.envelope();
        assert_eq!(
            keys(&envelope),
            ["field", "request_id", "sub_type", "timestamp", "value"]
        );
        assert_eq!(
            envelope["sub_type"],
            format!("message.{}", delivery.status().to_lowercase()).as_str()
        );
    }
}

#[tokio::test]
async fn auto_channel_is_reported_in_webhooks_not_in_the_202() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        auto_channel: "whatsapp".into(),
        ..config(&receiver)
    })
    .await;
    let request = json!({"to": ["+14155550123"], "text": "hi", "channel": ["sent"]});
    let (_, _, json) = parts(send(&client(), &sim, &request, None).await).await;
    let recipient = &json["data"]["recipients"][0];
    assert!(
        recipient["channel"].is_null() && recipient["body"].is_null(),
        "{json}"
    );
    let id = recipient["message_id"].as_str().unwrap().to_owned();
    wait_for(10, "QUEUED", || async {
        !receiver.statuses(&id).is_empty()
    })
    .await;
    let delivery = receiver.for_message(&id).remove(0);
    assert_eq!(delivery.payload()["channel"], "whatsapp");
    assert_eq!(delivery.payload()["body"], "hi");
    assert!(
        delivery.payload().get("template_id").is_none(),
        "free text: no template"
    );
}
