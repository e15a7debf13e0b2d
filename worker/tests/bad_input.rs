//! Hostile webhook content on the worker's side: a verified Sent event whose
//! ids hold characters Postgres text cannot store (U+0000) is stored by the
//! gateway (gateway/tests/bad_input.rs); processing it must not block the
//! events around it.

mod inbox_support;

use common::domain::MessageStatus;
use inbox_support::{API_KEY, Stack, sent_event};

#[tokio::test]
async fn a_nul_in_a_sent_message_id_does_not_block_other_events() {
    let stack = Stack::start(&[]).await;
    let id = stack.submit(API_KEY, None).await;
    stack.accept(&id, &["sent-good"]).await;
    let poison = sent_event("message.sent", "sent-\u{0}bad", "2026-01-15T10:00:00Z");
    assert_eq!(stack.post_sent(&poison, "poison").await, 200);
    for (k, event) in ["message.sent", "message.delivered"].iter().enumerate() {
        let body = sent_event(event, "sent-good", &format!("2026-01-15T10:00:0{}Z", k + 1));
        assert_eq!(stack.post_sent(&body, &format!("good-{k}")).await, 200);
    }
    stack.start_inbox();
    stack.wait_inbox_state("good-1", "processed").await;
    assert_eq!(stack.message(&id).await.status, MessageStatus::Delivered);
    // The poison itself ends somewhere final, not pending forever.
    let poison = stack
        .store()
        .inbox_event("sent", "poison")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(poison.state, "processed", "{poison:?}");
}
