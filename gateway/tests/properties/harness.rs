//! Running properties against one gateway.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::Value;

use crate::support::TestApp;

/// Cases per property: `PROPTEST_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(crate) fn config(default: u32) -> Config {
    Config {
        cases: cases(default),
        // Each shrink step is an HTTP request; a few hundred find the minimum.
        max_shrink_iters: 512,
        // No regression files in the source tree; a failure prints its input.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Default number of cases of the HTTP properties.
pub(crate) const HTTP_CASES: u32 = 256;
/// Default number of cases of the pure-function properties (microseconds each).
pub(crate) const PURE_CASES: u32 = 2048;

/// One gateway, and a runtime to drive it from proptest's synchronous runner.
pub(crate) struct Harness {
    app: Option<TestApp>,
    rt: tokio::runtime::Runtime,
}

impl Harness {
    pub(crate) fn new(overrides: &[(&str, &str)]) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = rt.block_on(TestApp::spawn(overrides));
        Harness { app: Some(app), rt }
    }

    /// Runs `test` on `cases` values of `strategy`; panics with the smallest
    /// failing input.
    pub(crate) fn check<S>(
        &self,
        default_cases: u32,
        strategy: S,
        test: impl AsyncFn(&TestApp, S::Value) -> Result<(), TestCaseError>,
    ) where
        S: Strategy,
    {
        let app = self.app.as_ref().unwrap();
        let mut runner = TestRunner::new(config(default_cases));
        let result = runner.run(&strategy, |value| self.rt.block_on(test(app, value)));
        if let Err(error) = result {
            panic!("{error}");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The app's pools and tasks belong to this runtime: drop them in it.
        let app = self.app.take();
        self.rt.block_on(async move { drop(app) });
    }
}

#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
    pub(crate) text: String,
}

pub(crate) async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a complete body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// POSTs raw bytes with the test's API key.
pub(crate) async fn post_bytes(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    answer(app.post(path).header(CONTENT_TYPE, content_type).body(body)).await
}

pub(crate) async fn post_json(app: &TestApp, path: &str, body: &Value) -> Answer {
    post_bytes(
        app,
        path,
        "application/json",
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

/// What holds for every answer: no 5xx, JSON, the error shape on a 4xx, and
/// a request id.
pub(crate) fn shape(a: &Answer) -> Result<(), TestCaseError> {
    prop_assert!(a.status < 500, "server error {}: {}", a.status, a.text);
    let is_json = a
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    prop_assert!(is_json, "not JSON: {} {:?} {}", a.status, a.headers, a.text);
    prop_assert!(!a.body.is_null(), "unparseable body: {}", a.text);
    if (400..500).contains(&a.status) {
        prop_assert!(
            a.body["error"].as_str().is_some_and(|s| !s.is_empty()),
            "no error sentence: {}",
            a.text
        );
        prop_assert!(
            a.body["code"].as_str().is_some_and(|s| !s.is_empty()),
            "no error code: {}",
            a.text
        );
    }
    prop_assert!(a.headers.contains_key("x-request-id"), "{:?}", a.headers);
    Ok(())
}
