"""Builds common/tests/fixtures/sent_answers.json: answers of Sent to
`POST /v3/messages` that the project's reader must handle, each validated with
the official SDK's models (sentdm 0.46.0) before it is written.

  python sdk/make_fixtures.py            # print the fixtures to stdout
  python sdk/make_fixtures.py --write    # (re)write the checked-in file

scripts/sdk-check.sh regenerates them and fails if the checked-in file
differs, so they cannot drift from the SDK.

Format: a JSON list of
  {"name": str, "status": int, "body": <json>,
   "expect": {"ids": [...]} | {"code": "LIMIT_001", "kind": "permanent" | "retry"}}

From a full valid 202 with two recipients ("m1", "m2"), every optional member
of MessageSendResponse that matters to a reader (success, meta and each of its
members, data.status, data.template_id, data.template_name, data.recipients,
and each recipient's to, channel, body, message_id) is, one at a time, set to
null and then removed; the ids still present are expected. Then error answers,
with the code and whether a sender retries (SENT_API.md, "Errors"); a null
error code is expected as HTTP_<status>.
"""

from __future__ import annotations

import copy
import json
import os
import sys

from sdkcheck import check_error_body, validate_model
from sent_dm.types.message_send_response import MessageSendResponse

OUT = os.path.join(os.path.dirname(__file__), "..", "common", "tests", "fixtures", "sent_answers.json")

META = {"request_id": "9d3c1f2e-1b7a-4c55-8e0f-2a6b4d8c0e11", "timestamp": "2026-01-15T10:35:00.000Z", "version": "v3"}

FULL = {
    "success": True,
    "data": {
        "status": "QUEUED",
        "template_id": "7ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "template_name": "welcome",
        "recipients": [
            {"message_id": "m1", "to": "+14155550123", "channel": "sms", "body": "Hi Ada"},
            {"message_id": "m2", "to": "+14155550123", "channel": "whatsapp", "body": "Hi Ada"},
        ],
    },
    "error": None,
    "meta": META,
}

# (path, how to reach it); a path is a list of keys and list indexes.
OPTIONAL = [
    ["success"],
    ["meta"],
    ["meta", "request_id"],
    ["meta", "timestamp"],
    ["meta", "version"],
    ["data", "status"],
    ["data", "template_id"],
    ["data", "template_name"],
    ["data", "recipients"],
] + [["data", "recipients", i, key] for i in (0, 1) for key in ("to", "channel", "body", "message_id")]


def dotted(path: list) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def ids_of(body: dict) -> list:
    recipients = ((body.get("data") or {}).get("recipients")) or []
    return [r["message_id"] for r in recipients if r.get("message_id") is not None]


def edited(path: list, remove: bool) -> dict:
    body = copy.deepcopy(FULL)
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if remove:
        del parent[path[-1]]
    else:
        parent[path[-1]] = None
    return body


def error(status: int, code, message: str, **extra) -> dict:
    detail = {"code": code, "message": message, "details": None, "doc_url": f"https://docs.sent.dm/errors/{code}"}
    detail.update(extra)
    detail = {k: v for k, v in detail.items() if v is not ...}
    return {"success": False, "data": None, "error": detail, "meta": META}


def cases() -> list:
    out = [{"name": "full 202, two recipients", "status": 202, "body": FULL, "expect": {"ids": ["m1", "m2"]}}]
    for path in OPTIONAL:
        for remove in (False, True):
            body = edited(path, remove)
            name = f"{dotted(path)} {'removed' if remove else 'null'}"
            out.append({"name": name, "status": 202, "body": body, "expect": {"ids": ids_of(body)}})

    limit = error(429, "LIMIT_001", "Account limit reached")
    limit["meta"] = None
    out += [
        {"name": "429 LIMIT_001 with meta null", "status": 429, "body": limit,
         "expect": {"code": "LIMIT_001", "kind": "permanent"}},
        {"name": "429 BUSINESS_002", "status": 429, "body": error(429, "BUSINESS_002", "Rate limit exceeded"),
         "expect": {"code": "BUSINESS_002", "kind": "retry"}},
        {"name": "409 CONFLICT_001", "status": 409,
         "body": error(409, "CONFLICT_001", "A request with this Idempotency-Key is already being processed"),
         "expect": {"code": "CONFLICT_001", "kind": "retry"}},
        {"name": "409 CONFLICT_002", "status": 409, "body": error(409, "CONFLICT_002", "Conflict"),
         "expect": {"code": "CONFLICT_002", "kind": "permanent"}},
        {"name": "400 VALIDATION_002, details null, doc_url missing", "status": 400,
         "body": error(400, "VALIDATION_002", "The request is invalid", doc_url=...),
         "expect": {"code": "VALIDATION_002", "kind": "permanent"}},
        {"name": "400 with error code null", "status": 400,
         "body": error(400, None, "The request is invalid", doc_url=None),
         "expect": {"code": "HTTP_400", "kind": "permanent"}},
        {"name": "503 with error code null", "status": 503,
         "body": error(503, None, "Service temporarily unavailable", doc_url=None),
         "expect": {"code": "HTTP_503", "kind": "retry"}},
    ]
    return out


def validated(all_cases: list) -> list:
    for case in all_cases:
        status, body = case["status"], case["body"]
        if 200 <= status < 300:
            validate_model(MessageSendResponse, body)
        else:
            check_error_body(status, body)
    names = [case["name"] for case in all_cases]
    assert len(names) == len(set(names)), "case names are unique"
    return all_cases


def render() -> str:
    return json.dumps(validated(cases()), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    text = render()
    if "--write" in sys.argv[1:]:
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        with open(OUT, "w", encoding="utf-8") as out:
            out.write(text)
        print(f"wrote {os.path.normpath(OUT)} ({len(json.loads(text))} cases)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
