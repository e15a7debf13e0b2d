//! Recording mode (`SimConfig::record`): every `/v3/...` exchange appended
//! to a file as one JSON line, for checking a client's traffic against
//! Sent's own SDK types afterwards (`sdk/check_recordings.py`):
//!
//! `{"method", "path", "headers": {lower-case name: value}, "request": <JSON body or null>,
//!   "request_raw"?: <body text when it is not JSON>, "status": <int or null>, "response": <JSON or null>}`
//!
//! `x-api-key` (and `authorization`) values are written as `<redacted>`.
//! `status` and `response` are `null` when the drop fault closed the
//! connection without an answer.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::Sim;
use crate::api::new_request_id;
use crate::api::response::Failure;
use crate::server::is_dropped;

/// Largest body the recorder reads; larger ones are refused (413) as the
/// send route refuses anything over 2 MiB anyway.
const MAX_BODY: usize = 16 << 20;
const REDACTED: &str = "<redacted>";

/// The recording file, opened on the first exchange; a mutex keeps
/// concurrent appends whole.
#[derive(Debug)]
pub(crate) struct Recorder {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl Recorder {
    pub fn new(path: PathBuf) -> Recorder {
        Recorder {
            path,
            file: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, line: &Value) {
        let mut text = serde_json::to_vec(line).expect("a JSON value serializes");
        text.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(dir);
            }
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(opened) => *file = Some(opened),
                Err(err) => {
                    tracing::warn!(path = %self.path.display(), error = %err, "cannot open the recording file");
                    return;
                }
            }
        }
        if let Some(file) = file.as_mut()
            && let Err(err) = file.write_all(&text)
        {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot append to the recording file");
        }
    }
}

/// Middleware: records `/v3` exchanges, passes everything else through.
pub(crate) async fn record(State(sim): State<Arc<Sim>>, request: Request, next: Next) -> Response {
    let Some(recorder) = sim.recorder.as_ref() else {
        return next.run(request).await;
    };
    if !request.uri().path().starts_with("/v3") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let mut line = Map::new();
    line.insert("method".into(), json!(parts.method.as_str()));
    line.insert("path".into(), json!(parts.uri.path()));
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let value = if matches!(name.as_str(), "x-api-key" | "authorization") {
            REDACTED.to_owned()
        } else {
            parts
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        headers.insert(name.as_str().to_owned(), Value::String(value));
    }
    line.insert("headers".into(), Value::Object(headers));

    let response = match to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(value) => {
                    line.insert("request".into(), value);
                }
                Err(_) => {
                    line.insert("request".into(), Value::Null);
                    if !bytes.is_empty() {
                        line.insert("request_raw".into(), json!(String::from_utf8_lossy(&bytes)));
                    }
                }
            }
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(_) => {
            line.insert("request".into(), Value::Null);
            line.insert("request_raw".into(), json!("<unreadable or over 16 MiB>"));
            Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "VALIDATION_001",
                "The request body is too large",
            )
            .into_response(
                &new_request_id(),
                sim.limiter.peek(None),
                sim.config.null_optionals,
            )
        }
    };

    if is_dropped(&response) {
        line.insert("status".into(), Value::Null);
        line.insert("response".into(), Value::Null);
        recorder.append(&Value::Object(line));
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    line.insert("status".into(), json!(parts.status.as_u16()));
    line.insert(
        "response".into(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    );
    recorder.append(&Value::Object(line));
    Response::from_parts(parts, Body::from(bytes))
}
