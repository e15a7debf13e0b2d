//! Logging (and, with issue 5, tracing export) set up once per process.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// `LOG_LEVEL` is either a plain level, applied to this project's crates
/// (dependencies stay at `warn`), or a full filter directive.
pub fn filter(level: &str) -> EnvFilter {
    let directive = if level.contains('=') || level.contains(',') {
        level.to_owned()
    } else {
        let level = level.to_ascii_lowercase();
        format!("warn,gateway={level},worker={level},common={level},sent_sim={level},tower_http=warn")
    };
    EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"))
}

pub fn init(config: &LogConfig) {
    let registry = tracing_subscriber::registry().with(filter(&config.level));
    let result = match config.format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false))
            .try_init(),
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer()).try_init(),
    };
    // Tests initialise more than once; the first subscriber stays.
    let _ = result;
}
