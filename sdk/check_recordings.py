"""Checks traffic recorded by sent-sim (recording mode, SENT_SIM_RECORD_DIR)
against Sent's official SDK types (sentdm 0.46.0).

Every `*.jsonl` under the directory holds one exchange per line:
  {"method", "path", "headers", "request", "request_raw"?, "status", "response"}

- each `POST /v3/messages` request body must be a valid MessageSendParams
  (strict types, and no key the TypedDicts do not define, `template` and
  `channels` entries included); a body that is not JSON fails;
- each answer must parse with the SDK: a 202 as MessageSendResponse, a 200 to
  `GET /v3/messages/{id}` as MessageRetrieveStatusResponse, an error as the
  envelope with ErrorDetail; keys the models do not define fail too
  (sent-sim must not invent fields), except `data.scheduled_at`, which the SDK
  documents on scheduled sends and held messages;
- no recording may show an API key (`x-api-key` must read `<redacted>`).

Zero exchanges in a given directory is a failure: a check that saw nothing
proves nothing.

  SENT_SIM_RECORD_DIR=target/sent-sim-record python sdk/check_recordings.py
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any, Dict

from sdkcheck import (
    Tally,
    check_error_body,
    check_send_answer,
    check_send_request,
    check_status_answer,
    die,
)

GET_MESSAGE = re.compile(r"^/v3/messages/[^/]+$")


def check_exchange(exchange: Dict[str, Any]) -> None:
    method, path = exchange.get("method"), exchange.get("path")
    headers = exchange.get("headers") or {}
    if "x-api-key" in headers and headers["x-api-key"] != "<redacted>":
        raise AssertionError("an x-api-key value was recorded")
    status, response = exchange.get("status"), exchange.get("response")
    request = exchange.get("request")
    if method == "POST" and path == "/v3/messages":
        if "request_raw" in exchange:
            raise AssertionError(f"the body is not JSON: {exchange['request_raw'][:200]!r}")
        check_send_request(request)
    if status is None:
        return  # the drop fault: no answer to check
    if not isinstance(status, int):
        raise AssertionError(f"status {status!r}")
    if 200 <= status < 300:
        if method == "POST" and path == "/v3/messages":
            check_send_answer(response, scheduled=isinstance(request, dict) and request.get("scheduled_at") is not None)
        elif method == "GET" and GET_MESSAGE.match(path or ""):
            check_status_answer(response)
        else:
            raise AssertionError(f"a {status} to {method} {path}, a route Sent's SDK does not call here")
    else:
        check_error_body(status, response)


def main() -> int:
    directory = os.environ.get("SENT_SIM_RECORD_DIR") or die("SENT_SIM_RECORD_DIR is not set")
    tally = Tally("recordings")
    files = sorted(glob.glob(os.path.join(directory, "**", "*.jsonl"), recursive=True))
    exchanges = 0
    sends = 0
    for file in files:
        with open(file, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                exchanges += 1
                where = f"{os.path.relpath(file, directory)}:{number}"
                try:
                    exchange = json.loads(line)
                except json.JSONDecodeError as err:
                    tally.fail(where, f"not a JSON line: {err}")
                    continue
                if exchange.get("method") == "POST" and exchange.get("path") == "/v3/messages":
                    sends += 1
                label = f"{where} {exchange.get('method')} {exchange.get('path')} -> {exchange.get('status')}"
                try:
                    check_exchange(exchange)
                    tally.passed += 1
                except AssertionError as err:
                    tally.fail(label, str(err))
    print(f"recordings: {exchanges} exchanges ({sends} sends) in {len(files)} files under {directory}")
    if exchanges == 0:
        tally.fail("recorded traffic", f"no exchange recorded under {directory}: nothing was checked")
    elif sends == 0:
        tally.fail("recorded traffic", f"no POST /v3/messages recorded under {directory}")
    return tally.finish()


if __name__ == "__main__":
    raise SystemExit(main())
