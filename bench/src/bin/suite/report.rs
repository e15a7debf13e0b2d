//! Plain-text tables of what the runs found.

use std::collections::BTreeMap;

use crate::faults::FaultReport;
use crate::ledger::Ledger;
use crate::load::{LoadReport, Phase};
use crate::statements::Statement;
use crate::traffic::{Op, OpStats};
use crate::wal::WalReport;

pub fn ops_table(ops: &BTreeMap<Op, OpStats>, seconds: f64) {
    println!(
        "  {:<28} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}  answers",
        "operation", "ops", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"
    );
    for (op, stats) in ops {
        if stats.total() == 0 {
            continue;
        }
        let mut answers: Vec<String> = stats
            .statuses
            .iter()
            .map(|(status, n)| format!("{status}:{n}"))
            .collect();
        if stats.transport_errors > 0 {
            answers.push(format!("no answer:{}", stats.transport_errors));
        }
        println!(
            "  {:<28} {:>8} {:>8.0} {:>8.1} {:>8.1} {:>9.1} {:>9}  {}",
            op.label(),
            stats.total(),
            stats.total() as f64 / seconds,
            stats.quantile_ms(0.5),
            stats.quantile_ms(0.99),
            stats.quantile_ms(0.999),
            stats.errors(),
            answers.join(" ")
        );
    }
}

pub fn ledger(ledger: &Ledger) {
    println!(
        "  messages: submitted {} accepted {} delivered {} failed {} (retries exhausted {}) lost {} \
         sent twice {} no final status {} (settled {:.1} s after the traffic)",
        ledger.submitted,
        ledger.accepted,
        ledger.delivered,
        ledger.failed,
        ledger.dead_lettered,
        ledger.lost,
        ledger.sent_twice,
        ledger.in_flight_at_sent,
        ledger.settle.as_secs_f64()
    );
    let states = |map: &BTreeMap<String, u64>| {
        map.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  statuses: {}", states(&ledger.statuses));
    println!("  webhook inbox: {}", states(&ledger.inbox));
    let sim = &ledger.sim;
    println!(
        "  at Sent: {} send requests, {} messages created, {} idempotent replays, \
         {} webhooks delivered ({} attempts failed, {} abandoned)",
        sim.send_requests,
        sim.messages_created,
        sim.idempotent_replays,
        sim.webhooks_delivered,
        sim.webhook_failures,
        sim.webhooks_abandoned
    );
    let f = &sim.faults_injected;
    let injected = [
        ("5xx", f.server_errors_5xx),
        ("429", f.rate_limited_429),
        ("slow", f.slow),
        ("dropped before", f.dropped_before_processing),
        ("dropped after", f.dropped_after_processing),
        ("duplicate webhooks", f.duplicate_webhooks),
        ("reordered messages", f.reordered_webhooks),
    ];
    let injected: Vec<String> = injected
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    if !injected.is_empty() {
        println!("  faults injected by sent-sim: {}", injected.join(", "));
    }
}

pub fn faults_summary(reports: &[FaultReport]) {
    println!(
        "\n{:<24} {:>9} {:>9} {:>9} {:>7} {:>5} {:>6} {:>8} {:>8}  result",
        "fault",
        "submitted",
        "accepted",
        "delivered",
        "failed",
        "lost",
        "twice",
        "refused",
        "settle s"
    );
    for report in reports {
        let l = &report.ledger;
        let broken = report.broken_promises();
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>7} {:>5} {:>6} {:>8} {:>8.1}  {}",
            report.fault.name(),
            l.submitted,
            l.accepted,
            l.delivered,
            l.failed,
            l.lost,
            l.sent_twice,
            report.refused,
            l.settle.as_secs_f64(),
            if broken.is_empty() {
                "ok".to_owned()
            } else {
                format!("FAILED: {}", broken.join("; "))
            }
        );
    }
}

pub fn load(report: &LoadReport) {
    let s = &report.sustained;
    println!(
        "\nsustained: {:.0} ops/s for {:.0} s",
        s.target_rate, s.seconds
    );
    ops_table(&s.ops, s.seconds);
    println!(
        "\nramp (each step 25% more; a step keeps up while errors < 1%, p99 < 1 s, nothing skipped,\n\
         and at its end no more messages late (2 s old, no final status) than its operations a second):"
    );
    println!(
        "  {:>9} {:>11} {:>10} {:>11} {:>8} {:>8}  kept up",
        "target/s", "achieved/s", "errors %", "worst p99", "skipped", "late"
    );
    for step in &report.ramp {
        println!(
            "  {:>9.0} {:>11.0} {:>10.2} {:>11.1} {:>8} {:>8}  {}",
            step.target_rate,
            step.achieved_ok_per_sec(),
            100.0 * step.error_share(),
            step.worst_p99_ms(),
            step.skipped,
            step.late,
            if step.kept_up() { "yes" } else { "no" }
        );
    }
    if let Some(best) = report
        .ramp
        .iter()
        .filter(|step| step.kept_up())
        .map(Phase::achieved_ok_per_sec)
        .reduce(f64::max)
    {
        println!("  highest rate kept up: {best:.0} ops/s");
    }
    if let Some(last) = report.ramp.last() {
        println!("\nlast ramp step ({:.0} ops/s target):", last.target_rate);
        ops_table(&last.ops, last.seconds);
    }
    println!("\nevery message accepted in the run:");
    ledger(&report.ledger);
    println!("\npeak memory (MB):");
    for (name, mb) in &report.rss_mb {
        println!("  {name:<34} {mb:>8.1}");
    }
    if let Some(costliest) = &report.statements {
        println!("\nPostgres' costliest statements over the whole run:");
        statements(costliest);
    }
}

/// One `suite wal` run: the total and the relations that wrote it.
pub fn wal(report: &WalReport) {
    println!(
        "  {}: {} whole lives (accept, send, sent, delivered, callbacks) in {:.1} s, {} callbacks delivered",
        report.bin, report.messages, report.seconds, report.callbacks
    );
    println!(
        "  WAL {:.1} MB: {:.0} bytes/message ({:.0} of them full-page images), {:.1} records/message",
        report.wal_bytes as f64 / 1e6,
        report.per_message(),
        report.fpi_bytes as f64 / report.messages as f64,
        report.records as f64 / report.messages as f64
    );
    println!(
        "  {:<44} {:>12} {:>10}",
        "written to", "bytes/msg", "records/msg"
    );
    // Every writer of at least 20 bytes a message: the top 30 alone once
    // hid three unread indexes of about 190 bytes each.
    let floor = 20 * report.messages;
    for (relation, bytes, records) in report.relations.iter().filter(|r| r.1 >= floor) {
        println!(
            "  {:<60} {:>12.0} {:>10.2}",
            relation,
            *bytes as f64 / report.messages as f64,
            *records as f64 / report.messages as f64
        );
    }
}

/// Where Postgres spent its time in a run (`crate::statements`).
pub fn statements(statements: &[Statement]) {
    println!(
        "  {:<90} {:>8} {:>9} {:>10} {:>10}",
        "statement", "calls", "rows", "exec ms", "plan ms"
    );
    for s in statements {
        println!(
            "  {:<90} {:>8} {:>9} {:>10.0} {:>10.0}",
            s.query, s.calls, s.rows, s.exec_ms, s.plan_ms
        );
    }
}

/// Every build's WAL bytes per message, each run and the median; the first
/// build is the baseline of the ratios.
pub fn wal_summary(reports: &[WalReport]) {
    let mut builds: Vec<(&str, Vec<f64>)> = Vec::new();
    for report in reports {
        match builds.iter_mut().find(|(bin, _)| *bin == report.bin) {
            Some((_, runs)) => runs.push(report.per_message()),
            None => builds.push((&report.bin, vec![report.per_message()])),
        }
    }
    let median = |runs: &[f64]| {
        let mut sorted = runs.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let baseline = median(&builds[0].1);
    println!(
        "\n{:<44} {:>16} {:>8}  runs",
        "build", "WAL bytes/msg", "ratio"
    );
    for (bin, runs) in &builds {
        let runs_text: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "{:<44} {:>16.0} {:>8.2}  {}",
            bin,
            median(runs),
            median(runs) / baseline,
            runs_text.join(" ")
        );
    }
}
