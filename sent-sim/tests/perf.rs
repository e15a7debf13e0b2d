//! Throughput check, not run by default:
//! `cargo test -p sent-sim --release --test perf -- --ignored --nocapture`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sent_sim::SimConfig;
use support::{Receiver, body, start, try_send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
async fn sends_per_second() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        webhook_url: std::env::var("PERF_NO_WEBHOOKS")
            .is_err()
            .then(|| receiver.url.clone()),
        step_delay: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let sim = Arc::new(sim);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let total = 40_000;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (sim, client, next) = (Arc::clone(&sim), client.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let request = body("+14155550123");
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let response = try_send(&client, &sim, &request, Some(&format!("perf-{n}")))
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                response.bytes().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "{total} sends in {elapsed:?}: {:.0}/s (client in the same process)",
        total as f64 / elapsed.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = sim.stats();
    println!("{stats:?}");
    assert_eq!(stats.messages_created, total as u64);
}
