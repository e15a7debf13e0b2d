//! Every secret this repository publishes (in the README, compose, `.env`
//! examples, scripts, docs and tests) is in `config::PUBLISHED_SECRETS`, which
//! the production profile refuses: a secret anyone can read in the project
//! is no secret. This scans every tracked file for `whsec_` literals and for
//! values given to the secret variables, and fails on one missing from the
//! list, so a new example secret cannot ship without being refused.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::config::PUBLISHED_SECRETS;
use regex::Regex;

/// Variables whose values are secrets.
const SECRET_VARS: &str = "API_KEYS|SENT_DM_WEBHOOK_SECRET|STRIPE_WEBHOOK_SECRET|\
TELEGRAM_WEBHOOK_SECRET_TOKEN|CALLBACK_SIGNING_KEY|SENT_SIM_WEBHOOK_SECRET|FORWARD_STRIPE_SECRET|\
FORWARD_TELEGRAM_SECRET";

fn tracked_files(root: &Path) -> Vec<String> {
    let output = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .expect("git ls-files");
    assert!(output.status.success(), "git ls-files failed");
    String::from_utf8(output.stdout)
        .unwrap()
        .split('\0')
        // This file's own strings are the scanner's fixtures.
        .filter(|f| {
            !f.is_empty() && *f != "Cargo.lock" && *f != "common/tests/published_secrets.rs"
        })
        .map(str::to_owned)
        .collect()
}

/// The secrets a file publishes: `whsec_` literals anywhere; in Rust,
/// `("VAR", "value")` pairs; elsewhere `VAR=value`, `VAR: value` and
/// compose's `${VAR:-default}`.
fn secrets_in(text: &str, rust: bool) -> BTreeSet<String> {
    let whsec = Regex::new(r"\bwhsec_[A-Za-z0-9+/=_!-]+").unwrap();
    let assigned = if rust {
        Regex::new(&format!(r#""(?:{SECRET_VARS})",\s*"([^"\s]+)""#)).unwrap()
    } else {
        Regex::new(&format!(
            r#"\b(?:{SECRET_VARS})\b[ \t]*[=:][ \t]*["']?(?:\$\{{[A-Z_]+:-([^}}]*)\}}|([A-Za-z0-9_+/=.:,@-]+))"#
        ))
        .unwrap()
    };
    let mut found: BTreeSet<String> = whsec
        .find_iter(text)
        .map(|m| m.as_str().to_owned())
        .collect();
    for captures in assigned.captures_iter(text) {
        let value = captures
            .get(1)
            .or(captures.get(2))
            .map_or("", |m| m.as_str());
        let variable_name = value
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if value.contains('$') || value.contains('<') || variable_name {
            continue; // a variable or a placeholder, not a value
        }
        for item in value.split(',') {
            // `name:key` and `name:key:admin` entries of API_KEYS publish the key.
            let secret = item
                .split_once(':')
                .map_or(item, |(_, key)| key.split(':').next().unwrap_or(key));
            if secret.len() >= 8 {
                found.insert(secret.to_owned());
            }
        }
    }
    found
}

#[test]
fn every_published_secret_is_refused_in_production() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut missing = BTreeSet::new();
    let mut seen = 0;
    for file in tracked_files(root) {
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
            continue; // binary, or deleted in the working tree
        };
        for secret in secrets_in(&text, file.ends_with(".rs")) {
            seen += 1;
            if !PUBLISHED_SECRETS.contains(&secret.as_str()) {
                missing.insert(format!("{secret}  ({file})"));
            }
        }
    }
    assert!(seen > 0, "the scan found no secret at all: is it looking?");
    assert!(
        missing.is_empty(),
        "secrets published in the repository but missing from config::PUBLISHED_SECRETS \
         (add them there, so production refuses them):\n{}",
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_scan_finds_each_form() {
    let text = r#"
        API_KEYS=demo:demo-key-0123456789,other:other-key-0123456789:admin
        SENT_DM_WEBHOOK_SECRET: ${SENT_DM_WEBHOOK_SECRET:-whsec_ZGVtby1zZWNyZXQ=}
        STRIPE_WEBHOOK_SECRET=stripe-secret-value
        API_KEYS=bench:$KEY
        TELEGRAM_WEBHOOK_SECRET_TOKEN=<your token>
    "#;
    let found = secrets_in(text, false);
    for expected in [
        "demo-key-0123456789",
        "other-key-0123456789",
        "whsec_ZGVtby1zZWNyZXQ=",
        "stripe-secret-value",
    ] {
        assert!(found.contains(expected), "{expected} in {found:?}");
    }
    assert_eq!(found.len(), 4, "{found:?}");
    let rust =
        r#"vars.insert(("API_KEYS", "tester:rust-key-0123456789")); ("API_KEYS", &format!("x"))"#;
    assert_eq!(
        secrets_in(rust, true),
        BTreeSet::from(["rust-key-0123456789".to_owned()])
    );
    assert!(secrets_in("fn to_whsec_string()", false).is_empty());
}
