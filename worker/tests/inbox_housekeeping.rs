//! Keeping the inbox and the callback log tidy: finished rows past their
//! retention are purged, parked events can be re-driven by an operator
//! (`worker inbox-redrive`), and one event that the database refuses does not
//! hold back the others of its batch.

mod inbox_support;

use common::domain::MessageStatus;
use std::collections::HashMap;
use std::process::Stdio;

use common::config::Config;
use common::store::Purged;
use inbox_support::*;
use serde_json::json;
use worker::purge::{PurgeReport, purge};

async fn exec(stack: &Stack, sql: &str) {
    sqlx::query(sql)
        .execute(stack.store().pool())
        .await
        .unwrap();
}

async fn ids(stack: &Stack, sql: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(sql)
        .fetch_all(stack.store().pool())
        .await
        .unwrap();
    rows.into_iter().map(|(s,)| s).collect()
}

#[tokio::test]
async fn finished_rows_past_their_retention_are_purged_and_nothing_else() {
    let stack = Stack::start(&[
        ("INBOX_RETENTION_DAYS", "30"),
        ("CALLBACK_RETENTION_DAYS", "7"),
    ])
    .await;
    // Inbox rows in every state, old and recent.
    for (event_id, state, age_days) in [
        ("old-processed", "processed", 31),
        ("old-not-applicable", "not_applicable", 40),
        ("recent-processed", "processed", 29),
        ("old-parked", "parked", 90),
        ("old-unmatched", "unmatched", 90),
        ("old-pending", "pending", 90),
    ] {
        let body = json!({"field": "message", "event": "message.sent", "payload": {"message_id": event_id}});
        sqlx::query(
            "INSERT INTO webhook_inbox (provider, event_id, body, state, received_at, processed_at)
             VALUES ('sent', $1, $2, $3, now() - make_interval(days => $4),
                     CASE WHEN $3 IN ('processed', 'not_applicable', 'parked')
                          THEN now() - make_interval(days => $4) END)",
        )
        .bind(event_id)
        .bind(serde_json::to_vec(&body).unwrap())
        .bind(state)
        .bind(age_days)
        .execute(stack.store().pool())
        .await
        .unwrap();
    }
    // Callbacks in every state, each with two attempts.
    let message = stack.submit(API_KEY, None).await;
    for (webhook_id, state, age_days) in [
        ("cb_old_delivered", "delivered", 8),
        ("cb_old_failed", "failed", 30),
        ("cb_recent_delivered", "delivered", 6),
        ("cb_old_pending", "pending", 30),
    ] {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO status_callbacks (webhook_id, message_id, client, url, status, at, state, attempts,
                                           created_at, completed_at)
             VALUES ($1, $2, 'tester', 'https://client.example/hook', 'sent', now(), $3, 2,
                     now() - make_interval(days => $4),
                     CASE WHEN $3 <> 'pending' THEN now() - make_interval(days => $4) END)
             RETURNING id",
        )
        .bind(webhook_id)
        .bind(&message)
        .bind(state)
        .bind(age_days)
        .fetch_one(stack.store().pool())
        .await
        .unwrap();
        exec(
            &stack,
            &format!(
                "INSERT INTO callback_attempts (callback_id, attempt, started_at, duration_ms, status_code)
                 VALUES ({id}, 1, now() - interval '{age_days} days', 5, 500),
                        ({id}, 2, now() - interval '{age_days} days', 5, 200)"
            ),
        )
        .await;
    }

    let report = purge(stack.store(), &stack.config).await.unwrap();
    assert_eq!(
        report,
        PurgeReport {
            inbox_events: 2,
            callbacks: 2
        }
    );
    assert_eq!(
        ids(
            &stack,
            "SELECT event_id FROM webhook_inbox ORDER BY event_id"
        )
        .await,
        [
            "old-parked",
            "old-pending",
            "old-unmatched",
            "recent-processed"
        ]
    );
    assert_eq!(
        ids(
            &stack,
            "SELECT webhook_id FROM status_callbacks ORDER BY webhook_id"
        )
        .await,
        ["cb_old_pending", "cb_recent_delivered"]
    );
    let (attempts,): (i64,) = sqlx::query_as("SELECT count(*) FROM callback_attempts")
        .fetch_one(stack.store().pool())
        .await
        .unwrap();
    assert_eq!(attempts, 4, "the attempts went with their callbacks");
    // A second pass finds nothing more.
    assert_eq!(
        purge(stack.store(), &stack.config).await.unwrap(),
        PurgeReport::default()
    );

    // 0 keeps everything forever.
    let forever = Stack::start(&[
        ("INBOX_RETENTION_DAYS", "0"),
        ("CALLBACK_RETENTION_DAYS", "0"),
    ])
    .await;
    exec(
        &forever,
        "INSERT INTO webhook_inbox (provider, event_id, body, state, processed_at)
         VALUES ('sent', 'ancient', '\\x7b7d', 'processed', now() - interval '10 years')",
    )
    .await;
    assert_eq!(
        purge(forever.store(), &forever.config).await.unwrap(),
        PurgeReport::default()
    );
}

/// A pass walks the oldest rows by id, in chunks, each starting after the
/// last row the previous one deleted, and stops at the first row written
/// inside the retention: the rows it keeps (parked) and the recent ones are
/// never read twice nor deleted.
#[tokio::test]
async fn a_purge_walks_the_oldest_rows_in_chunks() {
    let stack = Stack::start(&[("INBOX_RETENTION_DAYS", "30")]).await;
    let mut ids = Vec::new();
    for (n, (state, age_days)) in [
        ("processed", 40),
        ("parked", 40),
        ("processed", 39),
        ("not_applicable", 38),
        ("processed", 37),
        ("parked", 36),
        ("processed", 35),
        ("processed", 34),
        ("processed", 2),
        ("processed", 1),
    ]
    .into_iter()
    .enumerate()
    {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO webhook_inbox (provider, event_id, body, state, received_at, processed_at)
             VALUES ('sent', $1, $2, $3, now() - make_interval(days => $4), now() - make_interval(days => $4))
             RETURNING id",
        )
        .bind(format!("evt-{n}"))
        .bind(format!("{{\"n\": {n}}}").into_bytes())
        .bind(state)
        .bind(age_days)
        .fetch_one(stack.store().pool())
        .await
        .unwrap();
        ids.push(id);
    }
    let store = stack.store();
    let retention = stack.config.inbox.retention.unwrap();
    let bound = store.purge_bound(Purged::Inbox, retention).await.unwrap();
    let mut chunks = Vec::new();
    let mut after = 0;
    loop {
        let (deleted, last) = store
            .purge_chunk(Purged::Inbox, bound, after, 2)
            .await
            .unwrap();
        chunks.push((deleted, last));
        after = last;
        if deleted < 2 {
            break;
        }
    }
    // Deleted in id order, two at a time, the parked ones stepped over.
    assert_eq!(chunks, [(2, ids[2]), (2, ids[4]), (2, ids[7]), (0, ids[7])]);
    let left: Vec<(i64,)> = sqlx::query_as("SELECT id FROM webhook_inbox ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        left.into_iter().map(|(id,)| id).collect::<Vec<_>>(),
        [ids[1], ids[5], ids[8], ids[9]]
    );
}

#[test]
fn retention_settings_are_checked() {
    let base = [("APP_ENV", "testing")];
    let config = |extra: &[(&str, &str)]| {
        let vars: HashMap<String, String> = base
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&vars)
    };
    let defaults = config(&[]).unwrap();
    assert_eq!(
        defaults.inbox.retention,
        Some(std::time::Duration::from_secs(30 * 86_400))
    );
    assert_eq!(
        defaults.callbacks.retention,
        Some(std::time::Duration::from_secs(30 * 86_400))
    );
    assert_eq!(
        config(&[("INBOX_RETENTION_DAYS", "0")])
            .unwrap()
            .inbox
            .retention,
        None
    );
    // Shorter than Sent's retries: a purged event would be stored twice.
    assert_eq!(
        config(&[("INBOX_RETENTION_DAYS", "1")]).unwrap_err().var,
        "INBOX_RETENTION_DAYS"
    );
    assert_eq!(
        config(&[("CALLBACK_RETENTION_DAYS", "soon")])
            .unwrap_err()
            .var,
        "CALLBACK_RETENTION_DAYS"
    );
}

/// `worker inbox-redrive ARGS` against the stack's database; its output.
async fn inbox_redrive(stack: &Stack, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .arg("inbox-redrive")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "testing")
        .env("LOG_LEVEL", "warn")
        .env("DATABASE_URL", &stack.db.url)
        .env("REDIS_URL", &stack.redis.url)
        .env("REDIS_PREFIX", &stack.redis.prefix)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn parked_events_are_redriven_by_the_operator_and_then_applied() {
    let stack = Stack::start(&[]).await;
    let id = stack.submit(API_KEY, None).await;
    stack.accept(&id, &["sent-r1"]).await;
    for (event, event_id) in [
        ("message.sent", "e-sent"),
        ("message.delivered", "e-delivered"),
    ] {
        let body = sent_event(event, "sent-r1", "2026-01-15T10:35:00Z");
        assert_eq!(stack.post_sent(&body, event_id).await, 200);
    }
    // As if both had failed INBOX_MAX_ATTEMPTS times (a long outage of some kind).
    exec(
        &stack,
        "UPDATE webhook_inbox SET state = 'parked', attempts = 10, processed_at = now(),
                last_error = 'database: connection refused'",
    )
    .await;
    exec(&stack, "DELETE FROM webhook_inbox_queue").await;
    let stack = &stack;
    let parked = |event_id: &'static str| async move {
        stack
            .store()
            .inbox_event("sent", event_id)
            .await
            .unwrap()
            .unwrap()
    };
    let sent_row = parked("e-sent").await.id;
    let delivered_row = parked("e-delivered").await.id;
    stack.start_inbox();

    // One by id: only that one comes back, and is applied.
    let out = inbox_redrive(stack, &[&sent_row.to_string(), "999999"]).await;
    assert_eq!(out, format!("re-drove 1 webhook event(s)\n{sent_row}\n"));
    let row = stack.wait_inbox_state("e-sent", "processed").await;
    assert_eq!((row.attempts, row.last_error), (1, None));
    assert_eq!(stack.message(&id).await.status, MessageStatus::Sent);
    assert_eq!(parked("e-delivered").await.state, "parked");

    // Then all the parked ones.
    let out = inbox_redrive(stack, &["--all"]).await;
    assert_eq!(
        out,
        format!("re-drove 1 webhook event(s)\n{delivered_row}\n")
    );
    stack.wait_inbox_state("e-delivered", "processed").await;
    assert_eq!(stack.message(&id).await.status, MessageStatus::Delivered);
    // Nothing parked is left.
    assert_eq!(
        inbox_redrive(stack, &["--all"]).await,
        "re-drove 0 webhook event(s)\n"
    );
}

#[tokio::test]
async fn an_event_the_database_refuses_fails_alone_in_its_batch() {
    let stack = Stack::start(&[("INBOX_MAX_ATTEMPTS", "2")]).await;
    let mut messages = Vec::new();
    for i in 0..3 {
        let id = stack.submit(API_KEY, None).await;
        stack.accept(&id, &[&format!("sent-b{i}")]).await;
        messages.push(id);
    }
    // The database refuses any change of the second message (as a constraint
    // or a trigger of an operator's might).
    exec(
        &stack,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$",
    )
    .await;
    exec(
        &stack,
        &format!(
            "CREATE TRIGGER refuse BEFORE UPDATE ON messages FOR EACH ROW
               WHEN (OLD.id = '{}') EXECUTE FUNCTION refuse()",
            messages[1]
        ),
    )
    .await;
    for i in 0..3 {
        let body = sent_event(
            "message.delivered",
            &format!("sent-b{i}"),
            "2026-01-15T10:35:00Z",
        );
        assert_eq!(stack.post_sent(&body, &format!("e-{i}")).await, 200);
    }
    // All three are claimed in one batch: the batch's update fails, then
    // each event is applied on its own.
    stack.start_inbox();
    for i in [0, 2] {
        stack.wait_inbox_state(&format!("e-{i}"), "processed").await;
        assert_eq!(
            stack.message(&messages[i]).await.status,
            MessageStatus::Delivered
        );
    }
    let row = stack.wait_inbox_state("e-1", "parked").await;
    assert_eq!(row.attempts, 2);
    let error = row.last_error.unwrap();
    assert!(error.contains("refused by a test trigger"), "{error}");
    assert_eq!(
        stack.message(&messages[1]).await.status,
        MessageStatus::Accepted
    );
}
