"""sent-sim against Sent's official Python SDK (sentdm 0.46.0), the referee.

The SDK's own client sends to a running sent-sim the way Sent expects to be
called, and every answer is parsed with the SDK's models, strictly and with
no key the models do not define. Each error class must raise the exception
the SDK documents for it. A webhook receiver in this process checks every
delivery's signature with its own HMAC code (Python's hmac/hashlib/base64) and
each body with the SDK's MessageEvent.

Environment (scripts/sdk-check.sh sets it):
  SIM_URL                  e.g. http://127.0.0.1:43117
  SIM_API_KEY              a key the simulator accepts
  SIM_WEBHOOK_SECRET       the simulator's SENT_SIM_WEBHOOK_SECRET (whsec_...)

Exit status 1 when any check fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List

import sent_dm
from sdkcheck import (
    Tally,
    check_error_body,
    check_send_answer,
    check_status_answer,
    check_webhook_body,
    die,
)
from sent_dm.types.message_retrieve_status_response import MessageRetrieveStatusResponse
from sent_dm.types.message_send_response import MessageSendResponse

SIM_URL = os.environ.get("SIM_URL") or die("SIM_URL is not set")
API_KEY = os.environ.get("SIM_API_KEY") or die("SIM_API_KEY is not set")
SECRET = os.environ.get("SIM_WEBHOOK_SECRET") or die("SIM_WEBHOOK_SECRET is not set")

NUMBER = "+14155550123"
tally = Tally("conformance")


def client(api_key: str = API_KEY) -> sent_dm.Sent:
    # No retries: every answer is the simulator's first.
    return sent_dm.Sent(api_key=api_key, base_url=SIM_URL, max_retries=0, timeout=10)


SDK = client()


def sim(method: str, path: str, body: Any = None) -> Any:
    """The simulator's own /_sim routes."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(SIM_URL + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def wait_until(what: str, predicate: Callable[[], bool], secs: float = 15) -> None:
    deadline = time.monotonic() + secs
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ------------------------------------------------------------ webhook receiver


def expected_signature(webhook_id: str, timestamp: str, body: bytes) -> str:
    """SENT_API.md: key = base64 of the secret after whsec_; HMAC-SHA256 over id.timestamp.body."""
    encoded = SECRET[len("whsec_"):] if SECRET.startswith("whsec_") else SECRET
    key = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    mac = hmac.new(key, webhook_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


class Deliveries:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: List[Dict[str, Any]] = []
        self.problems: List[str] = []

    def add(self, item: Dict[str, Any], problem: str | None) -> None:
        with self.lock:
            self.items.append(item)
            if problem:
                self.problems.append(problem)

    def for_message(self, message_id: str) -> List[Dict[str, Any]]:
        with self.lock:
            return [d for d in self.items if d["message_id"] == message_id]


DELIVERIES = Deliveries()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        problem = None
        item: Dict[str, Any] = {"headers": headers, "body": body, "message_id": None, "status": None}
        try:
            for name in ("x-webhook-signature", "x-webhook-id", "x-webhook-timestamp", "x-webhook-event-id"):
                expect(name in headers, f"missing header {name}")
            expected = expected_signature(headers["x-webhook-id"], headers["x-webhook-timestamp"], body)
            offered = headers["x-webhook-signature"].strip().split()
            expect(any(hmac.compare_digest(expected, s) for s in offered), "the signature does not verify")
            expect(abs(time.time() - int(headers["x-webhook-timestamp"])) <= 300, "stale x-webhook-timestamp")
            event = check_webhook_body(json.loads(body))
            item.update(message_id=event.payload.message_id, status=getattr(event.payload, "message_status", None),
                        event=event.event, payload=json.loads(body)["payload"])
        except Exception as err:  # noqa: BLE001 - reported by the webhook check
            problem = f"{body[:200]!r}: {err}"
        DELIVERIES.add(item, problem)
        self.send_response(401 if problem else 200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def start_receiver() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/webhooks/sent"


# ------------------------------------------------------------ helpers


def send_raw(**params: Any):
    """Sends with the SDK; returns (raw answer, body JSON, model parsed by the SDK)."""
    raw = SDK.messages.with_raw_response.send(**params)
    return raw, json.loads(raw.http_response.text), raw.parse()


def recipients(body: Dict[str, Any]) -> List[Dict[str, Any]]:
    return body["data"]["recipients"]


def status_of(message_id: str):
    raw = SDK.messages.with_raw_response.retrieve_status(message_id)
    body = json.loads(raw.http_response.text)
    check_status_answer(body)
    parsed = raw.parse()
    expect(isinstance(parsed, MessageRetrieveStatusResponse), "retrieve_status did not parse")
    return body, parsed


def expect_error(exception: type, status: int, code: str | None, fn: Callable[[], Any]) -> Any:
    try:
        fn()
    except exception as err:
        expect(err.status_code == status, f"{exception.__name__} with status {err.status_code}, not {status}")
        body = err.body
        expect(isinstance(body, dict), f"the SDK could not read the error body: {body!r}")
        detail = check_error_body(status, body)
        if code is not None:
            expect(detail.code == code, f"error code {detail.code}, not {code}")
        return err
    except sent_dm.APIStatusError as err:
        raise AssertionError(f"raised {type(err).__name__} ({err.status_code}), not {exception.__name__}") from None
    raise AssertionError(f"no {exception.__name__}: the call succeeded")


def set_faults(**faults: Any) -> None:
    sim("POST", "/_sim/faults", faults)


# ------------------------------------------------------------ the checks


SENT: Dict[str, str] = {}  # name -> message id, for the later status and webhook checks


def auto_channel_by_template_name() -> None:
    raw, body, parsed = send_raw(to=[NUMBER], template={"name": "welcome", "parameters": {"name": "Ada"}})
    expect(raw.http_response.status_code == 202, f"status {raw.http_response.status_code}")
    check_send_answer(body)
    expect(isinstance(parsed, MessageSendResponse), "the SDK did not parse a MessageSendResponse")
    expect(parsed.success is True and parsed.data.status == "QUEUED", f"{body}")
    (only,) = parsed.data.recipients
    expect(only.channel is None and only.body is None, f"Sent picked the channel: channel and body must be null: {body}")
    expect(only.message_id and only.to == NUMBER, f"{body}")
    expect(parsed.data.template_name == "welcome", f"{body}")
    expect(raw.http_response.headers.get("x-request-id") == parsed.meta.request_id, "X-Request-Id differs from meta.request_id")
    SENT["auto"] = only.message_id


def sent_channel_by_template_id() -> None:
    _, body, parsed = send_raw(to=[NUMBER, "+14155550124"], template={"id": "tmpl_welcome"}, channel=["sent"])
    check_send_answer(body)
    expect(len(parsed.data.recipients) == 2, f"{body}")
    for recipient in parsed.data.recipients:
        expect(recipient.channel is None and recipient.body is None, f"channel [\"sent\"]: null channel and body: {body}")
    expect(parsed.data.template_id == "tmpl_welcome", f"{body}")


def named_channels() -> None:
    _, body, parsed = send_raw(to=[NUMBER], template={"id": "tmpl_welcome", "parameters": {"name": "Ada"}},
                               channel=["sms", "whatsapp"], idempotency_key=f"conf-{uuid.uuid4()}")
    check_send_answer(body)
    channels = sorted(r.channel for r in parsed.data.recipients)
    expect(channels == ["sms", "whatsapp"], f"{body}")
    expect(all(r.body for r in parsed.data.recipients), f"named channels carry the body: {body}")
    SENT["whatsapp"] = next(r.message_id for r in parsed.data.recipients if r.channel == "whatsapp")


def free_text_and_mms() -> None:
    _, body, parsed = send_raw(to=[NUMBER], text="Your code is 1234")
    check_send_answer(body)
    expect(parsed.data.recipients[0].channel is None, f"{body}")
    _, body, parsed = send_raw(to=[NUMBER], text="Look", subject="Hello", channel=["mms"],
                               media_urls=["https://cdn.example.com/banner.jpg"])
    check_send_answer(body)
    recipient = parsed.data.recipients[0]
    expect(recipient.channel == "mms" and recipient.body == "Look", f"{body}")
    SENT["mms"] = recipient.message_id


def sandbox() -> None:
    raw, body, parsed = send_raw(to=[NUMBER], template={"name": "welcome"}, sandbox=True)
    check_send_answer(body)
    expect(raw.http_response.headers.get("x-sandbox") == "true", "no X-Sandbox: true")
    message_id = parsed.data.recipients[0].message_id
    expect_error(sent_dm.NotFoundError, 404, "RESOURCE_001", lambda: SDK.messages.retrieve_status(message_id))


def scheduled() -> None:
    at = datetime.now(timezone.utc) + timedelta(minutes=5)
    _, body, parsed = send_raw(to=[NUMBER], template={"name": "welcome"}, scheduled_at=at)
    check_send_answer(body, scheduled=True)
    expect(parsed.data.status == "QUEUED", f"a scheduled send is QUEUED in the 202: {body}")
    message_id = parsed.data.recipients[0].message_id
    status_body, status = status_of(message_id)
    expect(status.data.status == "SCHEDULED", f"retrieve_status: {status_body}")
    expect(status.data.events[0].status == "SCHEDULED", f"{status_body}")
    SENT["scheduled"] = message_id
    SENT["scheduled_at"] = at.isoformat()


def delivered_status() -> None:
    message_id = SENT["auto"]
    wait_until("DELIVERED", lambda: status_of(message_id)[1].data.status == "DELIVERED")
    body, status = status_of(message_id)
    data = status.data
    expect(data.id == message_id and data.phone == NUMBER and data.channel == "sms", f"{body}")
    expect([e.status for e in data.events] == ["QUEUED", "ROUTED", "SENT", "DELIVERED"], f"{body}")
    expect(data.message_body and data.message_body.content, f"{body}")
    expect(data.reason_code is None, f"{body}")
    _, mms = status_of(SENT["mms"])
    expect(mms.data.message_body.media and mms.data.message_body.media[0].url == "https://cdn.example.com/banner.jpg",
           "the mms's media")


def blocked_status() -> None:
    _, body, parsed = send_raw(to=["+14155559999"], template={"name": "welcome"})
    message_id = parsed.data.recipients[0].message_id
    wait_until("BLOCKED", lambda: status_of(message_id)[1].data.status == "BLOCKED")
    body, status = status_of(message_id)
    expect(status.data.reason_code == "BUSINESS_029" and status.data.reason, f"{body}")
    expect(status.data.events[-1].reason_code == "BUSINESS_029", f"{body}")
    SENT["blocked"] = message_id


def errors_400() -> None:
    expect_error(sent_dm.BadRequestError, 400, "VALIDATION_002",
                 lambda: SDK.messages.send(to=["4155550123"], template={"name": "welcome"}))
    err = expect_error(sent_dm.BadRequestError, 400, "VALIDATION_001",
                       lambda: SDK.messages.send(to=[NUMBER], template={"name": "welcome"},
                                                 extra_body={"priority": "high"}))
    expect("priority" in (err.body["error"]["details"] or {}), f"the field is named: {err.body}")
    err = expect_error(sent_dm.BadRequestError, 400, "VALIDATION_001",
                       lambda: SDK.messages.send(to=[NUMBER], template={"name": "welcome"},
                                                 channels=["sms"]))  # type: ignore[arg-type]
    expect("channels" in (err.body["error"]["details"] or {}), f"the field is named: {err.body}")
    expect_error(sent_dm.BadRequestError, 400, "VALIDATION_004",
                 lambda: SDK.messages.send(to=[NUMBER], template={"name": "welcome"}, channel=["SMS"]))
    expect_error(sent_dm.BadRequestError, 400, "VALIDATION_003",
                 lambda: SDK.messages.send(to=[NUMBER], template={"id": "t", "name": "welcome"}))
    expect_error(sent_dm.BadRequestError, 400, "VALIDATION_003",
                 lambda: SDK.messages.send(to=[NUMBER], template={"name": "welcome"}, text="hi"))
    expect_error(sent_dm.BadRequestError, 400, "VALIDATION_001",
                 lambda: SDK.messages.send(to=[NUMBER], text="hi", channel=["mms"]))
    expect_error(sent_dm.BadRequestError, 400, "VALIDATION_001",
                 lambda: SDK.messages.send(to=[NUMBER], text="hi", channel=["mms"],
                                           media_urls=["http://cdn.example.com/a.jpg"]))
    expect_error(sent_dm.BadRequestError, 400, "VALIDATION_005",
                 lambda: SDK.messages.send(to=[NUMBER], template={"name": "welcome"},
                                           scheduled_at="2030-01-01T10:00:00"))
    expect_error(sent_dm.BadRequestError, 400, "VALIDATION_006",
                 lambda: SDK.messages.send(to=[NUMBER], template={"name": "welcome"}, idempotency_key="has space"))


def errors_401() -> None:
    expect_error(sent_dm.AuthenticationError, 401, "AUTH_002",
                 lambda: client("not-a-key").messages.send(to=[NUMBER], template={"name": "welcome"}))
    expect_error(sent_dm.AuthenticationError, 401, "AUTH_002",
                 lambda: client("not-a-key").messages.retrieve_status(SENT["auto"]))


def errors_403_404_422() -> None:
    expect_error(sent_dm.PermissionDeniedError, 403, "AUTH_004",
                 lambda: SDK.messages.send(to=[NUMBER], template={"name": "sim_forbidden"}))
    expect_error(sent_dm.NotFoundError, 404, "RESOURCE_002",
                 lambda: SDK.messages.send(to=[NUMBER], template={"name": "sim_not_found"}))
    expect_error(sent_dm.NotFoundError, 404, "RESOURCE_001",
                 lambda: SDK.messages.retrieve_status(str(uuid.uuid4())))
    for magic, code in [("sim_unapproved", "BUSINESS_005"), ("sim_no_balance", "BUSINESS_003"),
                        ("sim_opted_out", "BUSINESS_004"), ("sim_channel_unavailable", "BUSINESS_007"),
                        ("sim_quota", "BUSINESS_008")]:
        expect_error(sent_dm.UnprocessableEntityError, 422, code,
                     lambda magic=magic: SDK.messages.send(to=[NUMBER], template={"id": magic}))


def errors_409() -> None:
    key = f"conflict-{uuid.uuid4()}"
    set_faults(slow=1.0, slow_ms=1500)
    try:
        first: Dict[str, Any] = {}

        def send_first() -> None:
            try:
                first["answer"] = SDK.messages.send(to=[NUMBER], template={"name": "welcome"}, idempotency_key=key)
            except Exception as err:  # noqa: BLE001 - checked below
                first["error"] = err

        thread = threading.Thread(target=send_first)
        thread.start()
        time.sleep(0.4)
        expect_error(sent_dm.ConflictError, 409, "CONFLICT_001",
                     lambda: SDK.messages.send(to=[NUMBER], template={"name": "welcome"}, idempotency_key=key))
        thread.join()
        expect("answer" in first, f"the first send failed: {first.get('error')}")
    finally:
        set_faults()
    raw = SDK.messages.with_raw_response.send(to=[NUMBER], template={"name": "welcome"}, idempotency_key=key)
    expect(raw.http_response.headers.get("idempotent-replayed") == "true", "the repeat is not a replay")
    check_send_answer(json.loads(raw.http_response.text))
    expect(raw.parse().data.recipients[0].message_id == first["answer"].data.recipients[0].message_id,
           "the replay names the first send's message")


def errors_429() -> None:
    err = expect_error(sent_dm.RateLimitError, 429, "LIMIT_001",
                       lambda: SDK.messages.send(to=[NUMBER], template={"name": "sim_limit"}))
    expect("retry-after" not in err.response.headers, "LIMIT_001 carries no Retry-After")
    set_faults(rate_429=1.0)
    try:
        err = expect_error(sent_dm.RateLimitError, 429, "BUSINESS_002",
                           lambda: SDK.messages.send(to=[NUMBER], template={"name": "welcome"}))
        expect(err.response.headers.get("retry-after", "").isdigit(), "BUSINESS_002 carries Retry-After")
    finally:
        set_faults()


def errors_5xx() -> None:
    expected = {500: "INTERNAL_001", 502: "INTERNAL_002", 503: "SERVICE_001", 504: "INTERNAL_004"}
    seen = set()
    set_faults(rate_5xx=1.0)
    try:
        for _ in range(24):
            try:
                SDK.messages.send(to=[NUMBER], template={"name": "welcome"})
            except sent_dm.InternalServerError as err:
                detail = check_error_body(err.status_code, err.body)
                expect(expected.get(err.status_code) == detail.code, f"{err.status_code} with {detail.code}")
                seen.add(err.status_code)
                continue
            except sent_dm.APIStatusError as err:
                raise AssertionError(f"{err.status_code} raised {type(err).__name__}, not InternalServerError")
            raise AssertionError("a 5xx fault did not raise")
    finally:
        set_faults()
    expect(len(seen) >= 2, f"several kinds of 5xx: {sorted(seen)}")


def inbound() -> None:
    media = [{"url": "https://carrier.example/a.jpg", "mime_type": "image/jpeg", "size_bytes": 1234}]
    answer = sim("POST", "/_sim/inbound", {"from": NUMBER, "text": "Yes, please", "channel": "mms", "media": media})
    wait_until("message.received", lambda: len(DELIVERIES.for_message(answer["message_id"])) >= 1)
    (received,) = DELIVERIES.for_message(answer["message_id"])
    expect(received["event"] == "message.received", f"{received}")
    payload = received["payload"]
    expect(payload["inbound_number"] == NUMBER and payload["text"] == "Yes, please", f"{payload}")
    expect(payload["media"] == media and payload["channel"] == "mms", f"{payload}")
    expect(received["headers"]["x-webhook-event-id"] == answer["event_id"], "the event id /_sim/inbound answered")


def webhooks() -> None:
    wait_until("the WhatsApp message's webhooks", lambda: len(DELIVERIES.for_message(SENT["whatsapp"])) >= 4)
    wait_until("the blocked message's webhooks", lambda: len(DELIVERIES.for_message(SENT["blocked"])) >= 2)
    wait_until("message.scheduled", lambda: len(DELIVERIES.for_message(SENT["scheduled"])) >= 1)
    time.sleep(0.3)
    expect(not DELIVERIES.problems, "webhook deliveries failed the checks:\n  " + "\n  ".join(DELIVERIES.problems))
    auto = DELIVERIES.for_message(SENT["auto"])
    expect([d["status"] for d in auto] == ["QUEUED", "ROUTED", "SENT", "DELIVERED"], f"{[d['status'] for d in auto]}")
    expect(all(d["payload"]["channel"] == "sms" for d in auto), "the channel Sent picked is in the payload")
    expect(all(d["event"] == f"message.{d['status'].lower()}" for d in auto), "event names")
    blocked = DELIVERIES.for_message(SENT["blocked"])[-1]
    expect(blocked["payload"].get("reason_code") == "BUSINESS_029", f"{blocked['payload']}")
    (held,) = DELIVERIES.for_message(SENT["scheduled"])
    expect(held["event"] == "message.scheduled" and held["payload"].get("scheduled_at"), f"{held['payload']}")
    ids = [d["headers"]["x-webhook-event-id"] for d in DELIVERIES.items]
    expect(len(ids) == len(set(ids)), "every event has its own X-Webhook-Event-ID")
    endpoint_ids = {d["headers"]["x-webhook-id"] for d in DELIVERIES.items}
    expect(len(endpoint_ids) == 1, f"x-webhook-id is the endpoint's, the same on every delivery: {endpoint_ids}")


def main() -> int:
    sim("POST", "/_sim/webhook", {"url": start_receiver()})
    set_faults()
    checks = [
        ("202, no channel, template by name: channel and body null", auto_channel_by_template_name),
        ("202, channel [\"sent\"], template by id: channel and body null", sent_channel_by_template_id),
        ("202, named channels with an idempotency key", named_channels),
        ("202, free text, and mms with https media_urls", free_text_and_mms),
        ("sandbox: X-Sandbox and no side effects", sandbox),
        ("scheduled_at: 202 QUEUED, retrieve_status SCHEDULED", scheduled),
        ("retrieve_status through DELIVERED", delivered_status),
        ("retrieve_status of a BLOCKED message", blocked_status),
        ("400 BadRequestError (VALIDATION_001..006)", errors_400),
        ("401 AuthenticationError", errors_401),
        ("403 PermissionDeniedError, 404 NotFoundError, 422 UnprocessableEntityError", errors_403_404_422),
        ("409 ConflictError, then the replay", errors_409),
        ("429 RateLimitError: LIMIT_001 and BUSINESS_002", errors_429),
        ("5xx InternalServerError", errors_5xx),
        ("/_sim/inbound: message.received as InboundMessageEvent", inbound),
        ("webhooks: signatures, MessageEvent, event ids", webhooks),
    ]
    for name, fn in checks:
        tally.check(name, fn)
    stats = sim("GET", "/_sim/stats")
    tally.check("the SDK's own requests carry no field Sent does not define, but the deliberate ones",
                lambda: expect(stats.get("unknown_fields") == 1, f"unknown_fields = {stats.get('unknown_fields')}"))
    return tally.finish()


if __name__ == "__main__":
    raise SystemExit(main())
