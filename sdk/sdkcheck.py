"""Helpers shared by the SDK checks: strict validation with the official SDK's
models (sentdm 0.46.0), a walk that reports keys the SDK's types do not define,
and the pass/fail tally every script reports.

The SDK's response models allow extra keys and its request TypedDicts are
`total=False`, so validating with them alone cannot notice an invented or
misspelled field: `undefined_keys` does that part.
"""

from __future__ import annotations

import json
import os
from collections import abc
import sys
import traceback
import types
import typing
from typing import Any, Callable, Dict, Iterable, List, Union

import pydantic
from pydantic import TypeAdapter
from typing_extensions import is_typeddict

from sent_dm.types.error_detail import ErrorDetail
from sent_dm.types.inbound_message_event import InboundMessageEvent
from sent_dm.types.message_event import MessageEvent
from sent_dm.types.message_retrieve_status_response import MessageRetrieveStatusResponse
from sent_dm.types.message_send_params import MessageSendParams
from sent_dm.types.message_send_response import MessageSendResponse

# MessagesResource.send puts these MessageSendParams keys in headers, not in the body.
HEADER_PARAMS = frozenset({"idempotency_key", "x_profile_id"})

SEND_PARAMS = TypeAdapter(MessageSendParams)


class Tally:
    """Counts checks; `check` runs one and prints PASS/FAIL with the reason."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.passed = 0
        self.failed = 0

    def check(self, name: str, fn: Callable[[], Any]) -> bool:
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - every failure is reported, none stops the run
            self.failed += 1
            detail = str(err) or type(err).__name__
            print(f"FAIL {self.title}: {name}: {detail}", flush=True)
            if os.environ.get("SDK_CHECK_TRACEBACK"):
                traceback.print_exc()
            return False
        self.passed += 1
        print(f"PASS {self.title}: {name}", flush=True)
        return True

    def fail(self, name: str, detail: str) -> None:
        self.failed += 1
        print(f"FAIL {self.title}: {name}: {detail}", flush=True)

    def finish(self) -> int:
        """Prints this script's tally, adds it to $SDK_CHECK_COUNTS, returns the exit code."""
        print(f"{self.title}: {self.passed} passed, {self.failed} failed", flush=True)
        counts = os.environ.get("SDK_CHECK_COUNTS")
        if counts:
            with open(counts, "a", encoding="utf-8") as out:
                out.write(f"{self.passed} {self.failed}\n")
        return 1 if self.failed else 0


# ------------------------------------------------------------ undefined keys


def _fields(cls: Any) -> Dict[str, Any] | None:
    """The keys a model or TypedDict defines (JSON names), with their types."""
    if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
        return {(field.alias or name): field.annotation for name, field in cls.model_fields.items()}
    if is_typeddict(cls):
        return typing.get_type_hints(cls)
    return None


def undefined_keys(annotation: Any, value: Any, path: str = "", allow: Iterable[str] = ()) -> List[str]:
    """Dotted paths (`[]` for list items) of keys in `value` that `annotation`
    (a pydantic model, TypedDict, or a typing construct around them) does not
    define. Paths in `allow` are accepted."""
    allow = frozenset(allow)
    found: List[str] = []
    _walk(annotation, value, path, allow, found)
    return found


def _walk(annotation: Any, value: Any, path: str, allow: frozenset, found: List[str]) -> None:
    if value is None:
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        _walk(args[0], value, path, allow, found)
        return
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        candidates = [arg for arg in args if arg is not type(None)]
        structured = [arg for arg in candidates if _fields(arg) is not None or typing.get_origin(arg)]
        for arg in structured or candidates:
            _walk(arg, value, path, allow, found)
            return
        return
    fields = _fields(annotation)
    if fields is not None:
        if not isinstance(value, dict):
            return
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if key not in fields:
                if child not in allow:
                    found.append(child)
                continue
            _walk(fields[key], item, child, allow, found)
        return
    if origin in (list, tuple, abc.Sequence, abc.MutableSequence, abc.Iterable):
        if isinstance(value, list) and args:
            for item in value:
                _walk(args[0], item, f"{path}[]", allow, found)
        return
    if origin in (dict, abc.Mapping, abc.MutableMapping):
        if isinstance(value, dict) and len(args) == 2:
            for key, item in value.items():
                _walk(args[1], item, f"{path}.{key}", allow, found)
        return


# ------------------------------------------------------------ validation


def check_send_request(body: Any) -> None:
    """A `POST /v3/messages` body against MessageSendParams: types (strict) and keys."""
    if not isinstance(body, dict):
        raise AssertionError(f"the body is not a JSON object: {body!r}")
    header_keys = sorted(HEADER_PARAMS & body.keys())
    if header_keys:
        raise AssertionError(f"{header_keys} travel as headers, not in the body")
    unknown = undefined_keys(MessageSendParams, body)
    if unknown:
        raise AssertionError(f"keys MessageSendParams does not define: {unknown}")
    try:
        valid = SEND_PARAMS.validate_python(body, strict=True)
        # Iterable members are validated lazily: consume them.
        for entries in (valid.get("channels") or {}).values():
            list(entries)
    except pydantic.ValidationError as err:
        raise AssertionError(f"not a valid MessageSendParams: {err}") from None


def validate_model(model: type, body: Any, allow: Iterable[str] = ()) -> Any:
    """Strict validation of a JSON body with an SDK model, and no undefined keys."""
    try:
        parsed = model.model_validate_json(json.dumps(body), strict=True)
    except pydantic.ValidationError as err:
        raise AssertionError(f"not a valid {model.__name__}: {err}") from None
    unknown = undefined_keys(model, body, allow=allow)
    if unknown:
        raise AssertionError(f"keys {model.__name__} does not define: {unknown}")
    return parsed


def check_error_body(status: int, body: Any) -> ErrorDetail:
    """An error answer: the v3 envelope with `data` null and an ErrorDetail."""
    envelope = validate_model(MessageSendResponse, body)
    if envelope.data is not None:
        raise AssertionError(f"{status}: an error answer with data: {body}")
    if envelope.success not in (False, None):
        raise AssertionError(f"{status}: success is {envelope.success!r} on an error")
    if not isinstance(body.get("error"), dict):
        raise AssertionError(f"{status}: no error object: {body}")
    return validate_model(ErrorDetail, body["error"])


def check_send_answer(body: Any, scheduled: bool = False) -> MessageSendResponse:
    """A 202: MessageSendResponse; `data.scheduled_at` only on a scheduled send
    (the SDK documents that answer as "the same fields plus scheduled_at")."""
    allow = ["data.scheduled_at"] if scheduled else []
    parsed = validate_model(MessageSendResponse, body, allow=allow)
    if scheduled and not isinstance((body.get("data") or {}).get("scheduled_at"), str):
        raise AssertionError("a scheduled send's 202 without data.scheduled_at")
    return parsed


def check_status_answer(body: Any) -> MessageRetrieveStatusResponse:
    """A 200 to GET /v3/messages/{id}; `data.scheduled_at` only on a held message
    (documented by the SDK as ScheduledMessageResponse)."""
    data = body.get("data") if isinstance(body, dict) else None
    held = isinstance(data, dict) and (
        data.get("status") == "SCHEDULED"
        or any(e.get("status") == "SCHEDULED" for e in data.get("events") or [] if isinstance(e, dict))
    )
    return validate_model(MessageRetrieveStatusResponse, body, allow=["data.scheduled_at"] if held else [])


def check_webhook_body(body: Any) -> MessageEvent | InboundMessageEvent:
    """A webhook envelope, no undefined keys: InboundMessageEvent (payload
    InboundMessageEventPayload) for message.received, else MessageEvent
    (payload MessageEventPayload)."""
    inbound = isinstance(body, dict) and "message.received" in (body.get("event"), body.get("sub_type"))
    event = validate_model(InboundMessageEvent if inbound else MessageEvent, body)
    if event.payload is None:
        raise AssertionError(f"no payload: {body}")
    return event


def die(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(2)
