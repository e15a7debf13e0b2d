//! The worker binary as an operator runs it: killed with SIGKILL mid-send,
//! stopped with SIGTERM, `worker redrive`, and refusing a bad configuration.

mod send_harness;

use std::time::{Duration, Instant};

use common::domain::MessageStatus;
use send_harness::{Harness, messages, read_log, wait_for};
use sent_sim::Faults;

fn slow(ms: u64) -> Faults {
    Faults {
        slow: 1.0,
        slow_ms: ms,
        ..Faults::default()
    }
}

async fn all_sending(h: &Harness, ids: &[common::domain::MessageId]) -> bool {
    for id in ids {
        if h.message(*id).await.status != MessageStatus::Sending {
            return false;
        }
    }
    true
}

async fn terminate(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("running").to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("worker exits after SIGTERM")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_workers_jobs_complete_on_another_worker_without_double_sends() {
    let h = Harness::new().await;
    h.sim.set_faults(slow(3000));
    let (mut first, first_log) = h.spawn_process(&[]);
    let ids = h.submit(messages(10)).await;
    // Every message is mid-call at Sent when the worker dies.
    wait_for(30, "all ten messages in flight", || async {
        all_sending(&h, &ids).await && h.sim.stats().send_requests >= 10
    })
    .await;
    first.kill().await.unwrap(); // SIGKILL
    let killed_at = Instant::now();

    let (mut second, second_log) = h.spawn_process(&["run"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut accepted = 0;
        for id in &ids {
            accepted += usize::from(h.message(*id).await.status == MessageStatus::Accepted);
        }
        if accepted == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{accepted}/10 accepted 60 s after the kill\nfirst worker:\n{}\nsecond worker:\n{}",
            read_log(&first_log),
            read_log(&second_log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = killed_at.elapsed();
    println!(
        "SIGKILL recovery: all 10 in-flight messages accepted {:.1} s after the kill \
         (heartbeat 1 s x 3 missed, Sent answering in 3 s)",
        recovery.as_secs_f64()
    );

    for id in &ids {
        let record = h.message(*id).await;
        assert!(record.attempts >= 2, "re-run after the crash: {record:?}");
    }
    let stats = h.sim.stats();
    assert_eq!(stats.accepted_twice, 0, "{stats:?}");
    assert_eq!(
        stats.messages_created, 10,
        "exactly one message at Sent per message: {stats:?}"
    );
    assert_eq!(stats.distinct_idempotency_keys, 10);
    assert!(
        terminate(&mut second).await.success(),
        "{}",
        read_log(&second_log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_sends_then_exits_zero() {
    let h = Harness::new().await;
    // Sent takes longer than the 3 s after which a silent worker counts as
    // dead: the draining worker must keep its heartbeat.
    h.sim.set_faults(slow(5000));
    let (mut child, log) = h.spawn_process(&[]);
    let ids = h.submit(messages(5)).await;
    wait_for(30, "all five messages in flight", || async {
        all_sending(&h, &ids).await && h.sim.stats().send_requests >= 5
    })
    .await;
    // Another worker, ready to take over jobs it believes orphaned.
    let other = h.start_worker().await;

    let status = terminate(&mut child).await;
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        read_log(&log)
    );
    // Drained by the stopping worker itself, not re-run by the other one.
    for id in &ids {
        let record = h.message(*id).await;
        assert_eq!(
            (record.status.as_str(), record.attempts),
            ("accepted", 1),
            "{}",
            read_log(&log)
        );
    }
    let stats = h.sim.stats();
    assert_eq!(
        (stats.messages_created, stats.send_requests, stats.conflicts),
        (5, 5, 0),
        "{stats:?}"
    );
    other.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_redrive_puts_dead_letters_back_on_the_queue() {
    let mut h = Harness::new().await;
    h.set("WORKER_MAX_ATTEMPTS", "1");
    h.sim.set_faults(Faults {
        rate_5xx: 1.0,
        ..Faults::default()
    });
    let worker = h.start_worker().await;
    let ids = h.submit(messages(2)).await;
    h.wait_status(&ids, MessageStatus::Failed, 20).await;
    h.sim.set_faults(Faults::default());

    let (mut cli, log) = h.spawn_process(&["redrive", "--all"]);
    let status = tokio::time::timeout(Duration::from_secs(30), cli.wait())
        .await
        .unwrap()
        .unwrap();
    let output = read_log(&log);
    assert!(status.success(), "{output}");
    assert!(output.contains("re-drove 2 message(s)"), "{output}");
    h.wait_status(&ids, MessageStatus::Accepted, 20).await;

    let (mut cli, log) = h.spawn_process(&["redrive", &ids[0].to_string()]);
    assert!(cli.wait().await.unwrap().success());
    assert!(
        read_log(&log).contains("re-drove 0 message(s)"),
        "not dead-lettered any more"
    );
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_setting_stops_the_worker_naming_it() {
    let h = Harness::new().await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"));
    command
        .env_clear()
        .env("APP_ENV", "production")
        .current_dir(std::env::temp_dir());
    let output = command.output().await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));

    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"));
    let mut vars = h.vars.clone();
    vars.insert("APP_ENV".into(), "production".into());
    let signing_key = common::signature::WebhookSecret::generate().to_whsec_string();
    vars.insert("CALLBACK_SIGNING_KEY".into(), signing_key);
    vars.remove("SENT_DM_API_KEY");
    command
        .env_clear()
        .envs(&vars)
        .current_dir(std::env::temp_dir());
    let output = command.output().await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SENT_DM_API_KEY"), "{stderr}");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .arg("redrive")
        .envs(&h.vars)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "redrive needs --all or ids");
}
