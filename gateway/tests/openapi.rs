//! `GET /openapi.json` against the running gateway: the document is valid
//! OpenAPI 3.1, every operation in it is served, every route served is in it,
//! what the server answers is what the document says (status, headers, body
//! schema), and its example bodies are accepted. (Undocumented fields cannot
//! happen: bodies are serialized from the types their schemas come from.)

mod support;

use std::collections::BTreeSet;

use chrono::Utc;
use common::signature::{WebhookSecret, sign, sign_stripe};
use reqwest::Method;
use serde_json::{Value, json};
use support::{API_KEY, TestApp, split};

use common::test_support::SENT_WEBHOOK_SECRET as SENT_SECRET;
const STRIPE_SECRET: &str = "whsec_stripe_test_secret";
const TELEGRAM_TOKEN: &str = "tg_Secret-123";
const WEBHOOK_ID: &str = "3f2b8c1e-7d4a-4e2b-9c1a-5b6d7e8f9a0b";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn spawn(extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("SENT_DM_WEBHOOK_SECRET", SENT_SECRET),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
        ("TELEGRAM_WEBHOOK_SECRET_TOKEN", TELEGRAM_TOKEN),
    ];
    vars.extend_from_slice(extra);
    TestApp::spawn(&vars).await
}

async fn document(app: &TestApp) -> Value {
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    response.json().await.unwrap()
}

/// Every (method, path) of the document.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                out.push((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    &doc["paths"][path][method]
}

/// JSON pointer escaping of one segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The documented response for `status`, with the pointer to it.
fn documented_response(doc: &Value, method: &str, path: &str, status: u16) -> Option<String> {
    let responses = &operation(doc, method, path)["responses"];
    let response = responses.get(status.to_string())?;
    Some(match response.get("$ref").and_then(Value::as_str) {
        Some(r) => r[1..].to_owned(),
        None => format!("/paths/{}/{method}/responses/{status}", escape(path)),
    })
}

/// A JSON pointer as a URI fragment.
fn fragment(pointer: &str) -> String {
    pointer.replace('{', "%7B").replace('}', "%7D")
}

/// Validates `value` against the schema at `pointer` of the document, with
/// the whole document as the root so that `$ref`s resolve.
fn validate(doc: &Value, pointer: &str, value: &Value) -> Result<(), String> {
    let mut root = doc.clone();
    root.as_object_mut()
        .unwrap()
        .insert("$ref".into(), json!(format!("#{}", fragment(pointer))));
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .map_err(|e| format!("schema at {pointer}: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Checks one answer against the document: its status is documented for the
/// operation, its JSON body fits the schema, documented headers are there.
fn check_answer(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
) {
    let Some(response) = documented_response(doc, method, path, status) else {
        panic!("{method} {path} answered {status}, which it does not document: {body}");
    };
    assert!(headers.contains_key("x-request-id"));
    let documented = doc.pointer(&response).unwrap();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let content = documented["content"].as_object().unwrap_or_else(|| {
        panic!("{method} {path} {status}: no content documented");
    });
    let (media, _) = content
        .iter()
        .find(|(media, _)| content_type.starts_with(media.split(';').next().unwrap()))
        .unwrap_or_else(|| {
            panic!("{method} {path} {status}: {content_type} is not documented ({content:?})")
        });
    if media == "application/json" {
        let pointer = format!("{response}/content/application~1json/schema");
        if let Err(e) = validate(doc, &pointer, body) {
            panic!("{method} {path} {status}: {e}\n{body}");
        }
    }
    if status == 429 || status == 503 && body["code"] == "service_unavailable" {
        assert!(
            headers.contains_key("retry-after"),
            "{method} {path} {status}"
        );
    }
}

fn sample_path(path: &str, message_id: &str) -> String {
    let mut out = path.to_owned();
    while let Some(start) = out.find('{') {
        let end = out[start..].find('}').unwrap() + start;
        let value = match &out[start + 1..end] {
            "id" => message_id.to_owned(),
            other => panic!("no sample value for the path parameter {other} of {path}"),
        };
        out.replace_range(start..=end, &value);
    }
    out
}

/// A request as the document describes it: the API key when the operation
/// is secured, the provider's signature for webhooks, a JSON body.
fn request(
    app: &TestApp,
    doc: &Value,
    method: &str,
    path: &str,
    url_path: &str,
    body: Option<&Value>,
) -> reqwest::RequestBuilder {
    let op = operation(doc, method, path);
    let mut builder = app.http.request(
        Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
        app.url(url_path),
    );
    if op.get("security").is_some() {
        builder = builder.bearer_auth(API_KEY);
    }
    if let Some(body) = body {
        let bytes = serde_json::to_vec(body).unwrap();
        builder = signed(builder, path, &bytes)
            .header("content-type", "application/json")
            .body(bytes);
    }
    builder
}

fn signed(builder: reqwest::RequestBuilder, path: &str, body: &[u8]) -> reqwest::RequestBuilder {
    let now = Utc::now().timestamp();
    match path {
        "/webhooks/sent" => {
            let secret = WebhookSecret::parse(SENT_SECRET).unwrap();
            let ts = now.to_string();
            builder
                .header("x-webhook-id", WEBHOOK_ID)
                .header("x-webhook-timestamp", &ts)
                .header("x-webhook-signature", sign(&secret, WEBHOOK_ID, &ts, body))
        }
        "/webhooks/stripe" => {
            builder.header("stripe-signature", sign_stripe(STRIPE_SECRET, now, body))
        }
        "/webhooks/telegram" => builder.header("x-telegram-bot-api-secret-token", TELEGRAM_TOKEN),
        _ => builder,
    }
}

/// The request body examples of an operation, by name.
fn examples(op: &Value) -> Vec<(String, Value)> {
    let Some(content) = op["requestBody"]["content"]["application/json"].as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(example) = content.get("example") {
        out.push(("example".to_owned(), example.clone()));
    }
    for (name, example) in content
        .get("examples")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        out.push((name.clone(), example["value"].clone()));
    }
    out
}

async fn create_message(app: &TestApp) -> String {
    let (status, _, body) = app
        .post_json("/api/messages/send", &support::send_body())
        .await;
    assert_eq!(status, 202, "{body}");
    body["message_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let app = spawn(&[]).await;
    let doc = document(&app).await;
    let text = serde_json::to_string(&doc).unwrap();
    let spec = oas3::from_json(&text).expect("an OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    assert_eq!(spec.info.title, "sent-gateway");
    assert!(!spec.info.version.is_empty());
    assert_eq!(
        spec.paths.as_ref().map(|p| p.len()),
        doc["paths"].as_object().map(|p| p.len())
    );

    // Every operation: an id (unique), a tag, a summary, and responses; every
    // schema a valid JSON Schema (2020-12, OpenAPI 3.1's dialect).
    let mut ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let op = operation(&doc, &method, &path);
        let id = op["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
        assert!(op["tags"][0].is_string(), "{method} {path}: no tag");
        assert!(op["summary"].is_string(), "{method} {path}: no summary");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
        // A secured operation documents its 401; an open one does not claim one
        // unless it is a webhook (signature).
        if op.get("security").is_some() {
            assert!(
                op["responses"].get("401").is_some(),
                "{method} {path}: no 401"
            );
        }
        // Path parameters are declared.
        for name in path
            .split('{')
            .skip(1)
            .map(|s| s.split('}').next().unwrap())
        {
            assert!(
                op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["in"] == "path" && p["name"] == name && p["required"] == true),
                "{method} {path}: parameter {name} not declared"
            );
        }
    }
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        let mut root = doc.clone();
        root["$ref"] = json!(format!("#/components/schemas/{name}"));
        jsonschema::draft202012::options()
            .build(&root)
            .unwrap_or_else(|e| panic!("schema {name}: {e}"));
    }

    // The security schemes and the headers the contract names.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    for (method, path) in [
        ("post", "/api/messages/send"),
        ("post", "/api/messages/welcome"),
        ("post", "/api/messages/order-confirmation"),
    ] {
        let op = operation(&doc, method, path);
        assert_eq!(op["parameters"][0]["name"], "Idempotency-Key");
        let accepted = &op["responses"]["202"]["headers"];
        assert!(accepted["Location"].is_object() && accepted["Idempotent-Replayed"].is_object());
    }
    assert!(doc["components"]["responses"]["RateLimited"]["headers"]["Retry-After"].is_object());
    assert!(
        doc["components"]["responses"]["ServiceUnavailable"]["headers"]["Retry-After"].is_object()
    );
    // Every stable error code is listed.
    let codes: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for code in [
        "validation_error",
        "malformed_json",
        "unauthorized",
        "invalid_signature",
        "not_found",
        "method_not_allowed",
        "idempotency_conflict",
        "payload_too_large",
        "unsupported_media_type",
        "rate_limited",
        "service_unavailable",
        "internal_error",
    ] {
        assert!(codes.contains(code), "{code}");
    }
    // The send body's constraints.
    let send = &doc["components"]["schemas"]["SendBody"]["allOf"][0];
    assert_eq!(send["additionalProperties"], false);
    assert_eq!(
        send["properties"]["phone_number"]["pattern"],
        r"^\+[1-9][0-9]{1,14}$"
    );
    for field in ["template_id", "template_name"] {
        assert_eq!(send["properties"][field]["minLength"], 1);
        assert_eq!(send["properties"][field]["maxLength"], 100);
    }
    assert_eq!(
        doc["components"]["schemas"]["Channel"]["enum"],
        json!(["sms", "whatsapp", "rcs", "mms", "sent"])
    );
}

/// Document ⊆ router: every documented operation is served, answers only
/// what it documents, and its answer fits the documented schema. Router ⊆
/// document: on a documented path every other method is 405, and routes
/// are registered only through `routes!` (see the next test).
#[tokio::test]
async fn every_documented_operation_is_served_as_documented() {
    let app = spawn(&[]).await;
    let doc = document(&app).await;
    let message_id = create_message(&app).await;
    let ops = operations(&doc);
    assert!(ops.len() >= 18, "{ops:?}");
    for (method, path) in &ops {
        let url_path = sample_path(path, &message_id);
        // A JSON body that is an object, as every POST takes.
        let body = (method == "post").then(|| json!({}));
        let response = request(&app, &doc, method, path, &url_path, body.as_ref())
            .send()
            .await
            .unwrap();
        let (status, headers, body) = split(response).await;
        assert!(
            status != 404 && status != 405,
            "{method} {path} is documented but answers {status}: {body}"
        );
        check_answer(&doc, method, path, status, &headers, &body);

        // Without a key, a secured operation answers its documented 401.
        if operation(&doc, method, path).get("security").is_some() {
            let response = app
                .http
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    app.url(&url_path),
                )
                .send()
                .await
                .unwrap();
            let (status, headers, body) = split(response).await;
            assert_eq!(status, 401, "{method} {path} without a key: {body}");
            check_answer(&doc, method, path, status, &headers, &body);
        }
    }

    // On every documented path, the methods it does not document are 405.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url_path = sample_path(path, &message_id);
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                continue;
            }
            let response = app
                .http
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    app.url(&url_path),
                )
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                405,
                "{} {path} is served but not documented",
                method.to_uppercase()
            );
        }
    }
}

/// The router is built only from `app::routes`, whose `routes!` registers
/// each handler at the method and path of its `#[utoipa::path]`; this keeps
/// anyone from registering a route another way, which would bypass the
/// document.
#[test]
fn routes_are_registered_only_with_their_documentation() {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut files = vec![std::path::PathBuf::from(src)];
    let mut registrations = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line
                .split("//")
                .next()
                .unwrap()
                .replace("OpenApiRouter::new()", "");
            for forbidden in [
                ".route(",
                ".route_service(",
                ".nest(",
                ".nest_service(",
                ".fallback_service(",
                "Router::new()",
            ] {
                assert!(
                    !code.contains(forbidden),
                    "{}:{}: `{forbidden}` registers a route outside `app::routes` and the \
                     OpenAPI document; register it with `routes!` and a `#[utoipa::path]`",
                    path.display(),
                    n + 1
                );
            }
            registrations += code.matches("routes!(").count();
        }
    }
    assert!(registrations >= 18, "{registrations}");
}

/// Every example request body in the document fits its schema and is
/// accepted by the server.
#[tokio::test]
async fn example_request_bodies_are_accepted() {
    let app = spawn(&[]).await;
    let doc = document(&app).await;
    let mut tried = 0;
    for (method, path) in operations(&doc) {
        let op = operation(&doc, &method, &path);
        for (name, example) in examples(op) {
            let pointer = format!(
                "/paths/{}/{method}/requestBody/content/application~1json/schema",
                escape(&path)
            );
            if let Err(e) = validate(&doc, &pointer, &example) {
                panic!("{method} {path} example {name} does not fit its schema: {e}");
            }
            let response = request(&app, &doc, &method, &path, &path, Some(&example))
                .send()
                .await
                .unwrap();
            let (status, headers, body) = split(response).await;
            assert!(
                (200..300).contains(&status),
                "{method} {path} example {name}: {status} {body}"
            );
            check_answer(&doc, &method, &path, status, &headers, &body);
            if path == "/api/messages/batch" {
                for result in body["results"].as_array().unwrap() {
                    assert_eq!(result["status"], "queued", "{name}: {result}");
                }
            }
            tried += 1;
        }
    }
    // send (2), welcome, order-confirmation, batch, three webhooks.
    assert!(tried >= 8, "{tried}");

    // The schema refuses what the server refuses.
    let pointer = "/components/schemas/SendBody";
    for bad in [
        json!({"phone_number": "+14155550123"}),
        json!({"phone_number": "+04155550123", "template_name": "t"}),
        json!({"phone_number": "+14155550123", "template_name": ""}),
        json!({"phone_number": "+14155550123", "template_id": "x".repeat(101)}),
        json!({"phone_number": "+14155550123", "template_name": "t", "channels": ["email"]}),
        json!({"phone_number": "+14155550123", "template_name": "t", "extra": 1}),
        json!({"phone_number": "+14155550123", "template_name": "t", "parameters": {"n": 1}}),
    ] {
        assert!(
            validate(&doc, pointer, &bad).is_err(),
            "schema accepts {bad}"
        );
        let (status, _, body) = app.post_json("/api/messages/send", &bad).await;
        assert_eq!(status, 400, "server accepts {bad}: {body}");
    }
}

/// The errors the document describes, as the server really answers them.
#[tokio::test]
async fn error_answers_fit_the_document() {
    let app = spawn(&[("MAX_BODY_BYTES", "1024")]).await;
    let doc = document(&app).await;
    let send = "/api/messages/send";
    let cases: Vec<(&str, &str, reqwest::RequestBuilder)> = vec![
        (
            "post",
            send,
            app.post(send)
                .header("content-type", "application/json")
                .body("{nope"),
        ),
        (
            "post",
            send,
            app.post(send)
                .header("content-type", "text/plain")
                .body("{}"),
        ),
        (
            "post",
            send,
            app.post(send)
                .header("content-type", "application/json")
                .body(vec![b' '; 4096]),
        ),
        (
            "get",
            "/api/messages/{id}",
            app.get(&format!(
                "/api/messages/{}",
                common::domain::MessageId::new()
            )),
        ),
        (
            "get",
            "/api/messages",
            app.get("/api/messages?limit=0&status=lost"),
        ),
        (
            "post",
            "/webhooks/sent",
            app.http
                .post(app.url("/webhooks/sent"))
                .header("x-webhook-id", WEBHOOK_ID)
                .header("x-webhook-timestamp", Utc::now().timestamp().to_string())
                .header("x-webhook-signature", "v1,AAAA")
                .body("{}"),
        ),
        (
            "post",
            "/webhooks/telegram",
            signed(
                app.http.post(app.url("/webhooks/telegram")),
                "/webhooks/telegram",
                b"[1]",
            )
            .body("[1]"),
        ),
    ];
    for (method, path, request) in cases {
        let (status, headers, body) = split(request.send().await.unwrap()).await;
        assert!(status >= 400, "{method} {path}: {status}");
        check_answer(&doc, method, path, status, &headers, &body);
    }

    // 409: the same key with another body.
    let key = "openapi-conflict";
    let first = app
        .post(send)
        .header("idempotency-key", key)
        .json(&support::send_body())
        .send()
        .await
        .unwrap();
    let (status, headers, body) = split(first).await;
    assert_eq!(status, 202);
    assert!(headers.contains_key("location"));
    check_answer(&doc, "post", send, status, &headers, &body);
    let replay = app
        .post(send)
        .header("idempotency-key", key)
        .json(&support::send_body())
        .send()
        .await
        .unwrap();
    let (status, headers, body) = split(replay).await;
    assert_eq!(
        (status, &headers["idempotent-replayed"]),
        (202, &"true".parse().unwrap())
    );
    check_answer(&doc, "post", send, status, &headers, &body);
    let mut other = support::send_body();
    other["template_name"] = json!("another");
    let conflict = app.post(send).header("idempotency-key", key).json(&other);
    let (status, headers, body) = split(conflict.send().await.unwrap()).await;
    assert_eq!(status, 409);
    check_answer(&doc, "post", send, status, &headers, &body);
}

/// Every rate-limited operation documents its 429 (with `Retry-After`), and
/// the ones that are not limited do not claim one.
#[tokio::test]
async fn rate_limits_are_documented() {
    let app = spawn(&[
        ("RATELIMIT_ENABLED", "true"),
        ("RATELIMIT_MESSAGES", "1/minute"),
        ("RATELIMIT_WEBHOOKS", "1/minute"),
        ("RATELIMIT_DEFAULT", "1000/minute"),
    ])
    .await;
    let doc = document(&app).await;
    let message_id = create_message(&app).await; // spends the sending budget
    for (method, path) in operations(&doc) {
        if !(path.starts_with("/api/messages/") && method == "post"
            || path.starts_with("/webhooks/"))
        {
            continue;
        }
        let url_path = sample_path(&path, &message_id);
        let mut last = None;
        for _ in 0..2 {
            let response = request(&app, &doc, &method, &path, &url_path, Some(&json!({})))
                .send()
                .await
                .unwrap();
            last = Some(split(response).await);
        }
        let (status, headers, body) = last.unwrap();
        assert_eq!(status, 429, "{method} {path}: {body}");
        check_answer(&doc, &method, &path, status, &headers, &body);
    }

    let app = spawn(&[
        ("RATELIMIT_ENABLED", "true"),
        ("RATELIMIT_DEFAULT", "1/minute"),
    ])
    .await;
    // Spends the default budget of the IP and of the API key.
    let doc = document(&app).await;
    assert_eq!(app.get("/api/messages").send().await.unwrap().status(), 200);
    for (method, path) in operations(&doc) {
        if path.starts_with("/webhooks/") || path.starts_with("/api/messages/") && method == "post"
        {
            continue;
        }
        let url_path = sample_path(&path, &message_id);
        let response = request(&app, &doc, &method, &path, &url_path, None)
            .send()
            .await
            .unwrap();
        let (status, headers, body) = split(response).await;
        let documents_429 = operation(&doc, &method, &path)["responses"]
            .get("429")
            .is_some();
        assert_eq!(status == 429, documents_429, "{method} {path}: {status}");
        check_answer(&doc, &method, &path, status, &headers, &body);
    }
}
