//! Tenants apart on the send side: with `QUEUE_SHARD_BY=client` a client's
//! messages have a shard of their own among `QUEUE_SHARDS`, each shard its
//! own workers, and the Sent budget goes to the shards' waiting sends alike,
//! so a client flooding the gateway does not hold back another client's
//! later messages until the flood is through. Asserted by counts, not time.

mod send_harness;

use common::domain::{MessageId, MessageStatus};
use common::queue::SendJob;
use send_harness::{Harness, messages};

const FLOOD: usize = 400;
const QUIET: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_does_not_hold_back_another_clients_later_sends() {
    let mut h = Harness::new().await;
    let url = h.redis.url.clone();
    h.use_redis(&[
        ("REDIS_URL", &url),
        ("QUEUE_SHARDS", "8"),
        ("QUEUE_SHARD_BY", "client"),
    ])
    .await;
    // The Sent budget is what the clients compete for: 60 at once, then one
    // a second, so the flood alone would take minutes.
    h.set("SENT_MESSAGES_PER_MINUTE", "60");
    h.set("WORKER_CONCURRENCY", "4");

    // Client names hash to shards; the second one must not share the
    // first's (with eight shards, few names need trying).
    let shard = |client: &str| {
        let job = SendJob::new(MessageId::new(), Default::default()).for_client(client);
        h.queue.shard_of(&job).queue.as_ref().to_owned()
    };
    let quiet = (0..)
        .map(|n| format!("quiet-{n}"))
        .find(|name| shard(name) != shard("flood"))
        .unwrap();

    // The flood is queued first, the quiet client's messages after all of it.
    let flood = h.submit_as("flood", messages(FLOOD)).await;
    let later = h.submit_as(&quiet, messages(QUIET)).await;
    let worker = h.start_worker().await;

    h.wait_status(&later, MessageStatus::Accepted, 60).await;
    let mut flood_sent = 0;
    for id in &flood {
        flood_sent += usize::from(h.message(*id).await.status != MessageStatus::Queued);
    }
    // In one queue in order, all 400 would go first. With a lane each, the
    // budget is shared: the quiet client's 20 go out while about as many
    // of the flood do.
    assert!(
        flood_sent < FLOOD / 4,
        "{flood_sent} of the flood's {FLOOD} messages went before the quiet client's {QUIET}"
    );
    worker.stop().await.unwrap();
}
