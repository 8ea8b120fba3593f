"""The REST-JSON wire protocol of AWS HealthImaging, driven entirely by botocore's service model.

Routes (method + URI template), member locations (uri, querystring, header, payload), shapes and their
constraints (required, min/max, pattern, enum, unions), timestamp and blob encodings, response status
codes and error names all come from ``botocore/data/medical-imaging/*/service-2.json``: nothing here is
written per operation.  ``Protocol.parse_request`` turns an HTTP request into validated Python parameters
(as boto3 would have given them), and ``Protocol.serialize_response`` turns an operation's result back
into the bytes a real endpoint sends.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import unquote

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape, StructureShape

from emulator.exceptions import ResourceNotFoundException, ServiceError, ValidationException

SERVICE_NAME = "medical-imaging"

# Operations whose successful response has no body.  The botocore model says 200 for every operation,
# but the service answers TagResource and UntagResource with 204 and an empty body (spec §1.8, FR:6401).
_NO_CONTENT_OPERATIONS = frozenset({"TagResource", "UntagResource"})

_LABEL = re.compile(r"^\{(\w+)(\+?)\}$")


@cache
def service_model() -> ServiceModel:
    """Return botocore's ``medical-imaging`` service model (loaded once)."""
    return botocore.session.get_session().get_service_model(SERVICE_NAME)


@dataclass(frozen=True)
class Route:
    """One operation's HTTP method and URI template, split into literal and label segments."""

    operation: OperationModel
    method: str
    segments: tuple[str, ...]
    labels: tuple[tuple[int, str, bool], ...]  # (segment index, member name, greedy)

    @classmethod
    def of(cls, operation: OperationModel) -> Route:
        path = operation.http["requestUri"].split("?", 1)[0]
        segments = tuple(path.strip("/").split("/"))
        labels = []
        for index, segment in enumerate(segments):
            match = _LABEL.match(segment)
            if match:
                labels.append((index, match.group(1), bool(match.group(2))))
        return cls(operation, operation.http["method"], segments, tuple(labels))

    def match(self, method: str, raw_segments: list[str]) -> dict[str, str] | None:
        """Return the URI labels when ``method`` and the raw (still percent-encoded) path match."""
        if method != self.method or len(raw_segments) != len(self.segments):
            return None
        label_positions = {index for index, _, _ in self.labels}
        for index, segment in enumerate(self.segments):
            if index not in label_positions and segment != raw_segments[index]:
                return None
        return {name: unquote(raw_segments[index]) for index, name, _ in self.labels}


@dataclass
class HttpResponse:
    """What the HTTP layer writes back: status, headers, and a body given whole or as chunks."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: Iterable[bytes] | None = None
    content_length: int | None = None


@dataclass(frozen=True)
class StreamingBody:
    """An operation result member that is streamed to the client (GetImageFrame's frame)."""

    chunks: Iterable[bytes]
    length: int


class _Invalid:
    """Collects validation failures, formatted the way AWS services report them."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, path: str, value: object, constraint: str) -> None:
        shown = "null" if value is None else _redact(value)
        self.errors.append(f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}")

    def raise_if_any(self) -> None:
        if self.errors:
            count = len(self.errors)
            noun = "error" if count == 1 else "errors"
            raise ValidationException(f"{count} validation {noun} detected: " + "; ".join(self.errors))


def _redact(value: object) -> str:
    # Values are echoed like the service does, but kept short: request members can carry metadata.
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > 64:
        text = text[:61] + "..."
    return f"'{text}'"


class Protocol:
    """Parses and serializes ``medical-imaging`` requests and responses from the service model."""

    def __init__(self, model: ServiceModel | None = None) -> None:
        self.model = model or service_model()
        self.routes = [Route.of(self.model.operation_model(name)) for name in self.model.operation_names]

    # ------------------------------------------------------------------ routing
    def route(self, method: str, raw_path: str) -> tuple[OperationModel, dict[str, str]]:
        """Find the operation for ``method`` and the raw request path (without the query string)."""
        raw_segments = raw_path.strip("/").split("/")
        for route in self.routes:
            labels = route.match(method, raw_segments)
            if labels is not None:
                return route.operation, labels
        raise ResourceNotFoundException(f"No operation matches {method} {raw_path}")

    # ------------------------------------------------------------------ requests
    def parse_request(  # noqa: PLR0912 - one branch per member location of the model
        self,
        operation: OperationModel,
        labels: Mapping[str, str],
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> dict[str, Any]:
        """Return the operation's validated input parameters, as Python values.

        Raises
        ------
        ValidationException
            For malformed JSON, wrong types, missing required members and broken constraints.
        """
        shape = operation.input_shape
        if shape is None:
            return {}
        params: dict[str, Any] = {}
        payload_member = shape.serialization.get("payload")
        body_members: dict[str, Shape] = {}
        for name, member in shape.members.items():
            location = member.serialization.get("location")
            wire_name = member.serialization.get("name", name)
            if location == "uri":
                if wire_name in labels:
                    params[name] = labels[wire_name]
            elif location == "querystring":
                if wire_name in query:
                    params[name] = self._from_query(member, query[wire_name], name)
            elif location == "header":
                header = _header(headers, wire_name)
                if header is not None:
                    params[name] = self._from_text(member, header, name)
            elif name != payload_member:
                body_members[name] = member
        document = self._json_body(body) if (payload_member or body_members) else {}
        if payload_member:
            payload_shape = shape.members[payload_member]
            if payload_shape.type_name == "blob":
                params[payload_member] = body
            elif document is not None:
                params[payload_member] = self._from_json(payload_shape, document, payload_member)
        elif isinstance(document, dict):
            for name, value in document.items():
                if name not in body_members:
                    raise ValidationException(f"Unknown member '{name}' in the request body")
                params[name] = self._from_json(body_members[name], value, name)
        invalid = _Invalid()
        _validate(shape, params, "", invalid)
        invalid.raise_if_any()
        return params

    @staticmethod
    def _json_body(body: bytes) -> Any:
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except json.JSONDecodeError as error:
            raise ValidationException(f"The request body is not valid JSON: {error.msg}") from None
        except UnicodeDecodeError:
            raise ValidationException("The request body is not valid UTF-8 JSON") from None

    def _from_query(self, shape: Shape, values: list[str], path: str) -> Any:
        if shape.type_name == "list":
            return [self._from_text(shape.member, value, path) for value in values]  # type: ignore[attr-defined]
        return self._from_text(shape, values[-1], path)

    @staticmethod
    def _from_text(shape: Shape, text: str, path: str) -> Any:
        kind = shape.type_name
        try:
            if kind in ("integer", "long"):
                return int(text)
            if kind in ("float", "double"):
                return float(text)
            if kind == "boolean":
                if text.lower() not in ("true", "false"):
                    raise ValueError(text)
                return text.lower() == "true"
            if kind == "timestamp":
                return _parse_timestamp(text)
        except ValueError:
            raise ValidationException(f"Value '{text}' at '{path}' is not a valid {kind}") from None
        return text

    def _from_json(self, shape: Shape, value: Any, path: str) -> Any:  # noqa: PLR0911, PLR0912 - per shape type
        kind = shape.type_name
        if value is None:
            return None
        if kind == "structure":
            if not isinstance(value, dict):
                raise ValidationException(f"Expected an object at '{path}'")
            members = shape.members  # type: ignore[attr-defined]
            out: dict[str, Any] = {}
            for key, item in value.items():
                if key not in members:
                    raise ValidationException(f"Unknown member '{key}' at '{path}'")
                out[key] = self._from_json(members[key], item, f"{path}.{key}")
            return out
        if kind == "list":
            if not isinstance(value, list):
                raise ValidationException(f"Expected a list at '{path}'")
            return [self._from_json(shape.member, item, f"{path}.member") for item in value]  # type: ignore[attr-defined]
        if kind == "map":
            if not isinstance(value, dict):
                raise ValidationException(f"Expected a map at '{path}'")
            return {
                key: self._from_json(shape.value, item, f"{path}.{key}")  # type: ignore[attr-defined]
                for key, item in value.items()
            }
        if kind == "blob":
            if not isinstance(value, str):
                raise ValidationException(f"Expected base64 text at '{path}'")
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValidationException(f"Value at '{path}' is not valid base64") from None
        if kind == "timestamp":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValidationException(f"Expected a timestamp at '{path}'")
            try:
                return _parse_timestamp(value)
            except ValueError:
                raise ValidationException(f"Value '{value}' at '{path}' is not a valid timestamp") from None
        expected: dict[str, type | tuple[type, ...]] = {
            "string": str,
            "boolean": bool,
            "integer": int,
            "long": int,
            "float": (int, float),
            "double": (int, float),
        }
        python_type = expected.get(kind)
        ok = python_type is not None and isinstance(value, python_type)
        if kind in ("integer", "long", "float", "double") and isinstance(value, bool):
            ok = False
        if not ok:
            raise ValidationException(f"Expected a {kind} at '{path}'")
        return value

    # ------------------------------------------------------------------ responses
    def serialize_response(self, operation: OperationModel, output: Mapping[str, Any]) -> HttpResponse:
        """Return the HTTP response for an operation's ``output`` (a dict of output members)."""
        if operation.name in _NO_CONTENT_OPERATIONS:
            return HttpResponse(status=204)
        shape = operation.output_shape
        status = int(operation.http.get("responseCode", 200))
        if shape is None:
            return HttpResponse(status=status, headers={"Content-Type": "application/json"}, body=b"{}")
        response = HttpResponse(status=status)
        payload_member = shape.serialization.get("payload")
        body: dict[str, Any] = {}
        for name, member in shape.members.items():
            if name not in output or output[name] is None:
                continue
            value = output[name]
            location = member.serialization.get("location")
            wire_name = member.serialization.get("name", name)
            if location == "header":
                response.headers[wire_name] = str(value)
            elif location == "statusCode":
                response.status = int(value)
            elif name == payload_member:
                self._payload(response, member, value)
            else:
                body[wire_name] = _to_json(member, value)
        if payload_member is None:
            response.headers.setdefault("Content-Type", "application/json")
            response.body = json.dumps(body, separators=(",", ":")).encode()
        return response

    @staticmethod
    def _payload(response: HttpResponse, member: Shape, value: Any) -> None:
        if isinstance(value, StreamingBody):
            response.stream = value.chunks
            response.content_length = value.length
        elif member.type_name == "blob":
            response.body = bytes(value)
        else:
            response.headers.setdefault("Content-Type", "application/json")
            response.body = json.dumps(_to_json(member, value), separators=(",", ":")).encode()

    @staticmethod
    def serialize_error(error: ServiceError) -> HttpResponse:
        """Return the REST-JSON error response botocore parses into ``ClientError``."""
        body = json.dumps({"__type": error.code, "message": error.message}).encode()
        return HttpResponse(
            status=error.status,
            headers={"Content-Type": "application/json", "x-amzn-ErrorType": error.code},
            body=body,
        )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _parse_timestamp(value: str | float) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    text = value.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _to_json(shape: Shape, value: Any) -> Any:  # noqa: PLR0911 - one return per shape type
    kind = shape.type_name
    if value is None:
        return None
    if kind == "structure":
        members = shape.members  # type: ignore[attr-defined]
        return {
            members[key].serialization.get("name", key): _to_json(members[key], item)
            for key, item in value.items()
            if key in members and item is not None
        }
    if kind == "list":
        return [_to_json(shape.member, item) for item in value]  # type: ignore[attr-defined]
    if kind == "map":
        return {key: _to_json(shape.value, item) for key, item in value.items()}  # type: ignore[attr-defined]
    if kind == "timestamp":
        moment = value if isinstance(value, datetime) else _parse_timestamp(value)
        return round(moment.timestamp(), 3)
    if kind == "blob":
        return base64.b64encode(bytes(value)).decode()
    return value


# ---------------------------------------------------------------------- validation
def _validate(shape: Shape, value: Any, path: str, invalid: _Invalid) -> None:  # noqa: PLR0912 - per constraint
    kind = shape.type_name
    if value is None:
        return
    metadata = shape.metadata
    if kind == "structure":
        assert isinstance(shape, StructureShape)
        members = shape.members
        for required in shape.required_members:
            if value.get(required) is None:
                invalid.add(_join(path, required), None, "Member must not be null")
        if metadata.get("union"):
            present = [key for key, item in value.items() if item is not None]
            if len(present) != 1:
                invalid.add(path or shape.name, value, "Exactly one member of the union must be set")
        for key, item in value.items():
            if key in members:
                _validate(members[key], item, _join(path, key), invalid)
        return
    if kind in ("string", "blob", "list", "map"):
        length = len(value)
        if "min" in metadata and length < metadata["min"]:
            invalid.add(path, value, f"Member must have length greater than or equal to {metadata['min']}")
        if "max" in metadata and length > metadata["max"]:
            invalid.add(path, value, f"Member must have length less than or equal to {metadata['max']}")
    if kind in ("integer", "long", "float", "double"):
        if "min" in metadata and value < metadata["min"]:
            invalid.add(path, value, f"Member must have value greater than or equal to {metadata['min']}")
        if "max" in metadata and value > metadata["max"]:
            invalid.add(path, value, f"Member must have value less than or equal to {metadata['max']}")
    if kind == "string":
        enum = shape.enum  # type: ignore[attr-defined]
        if enum and value not in enum:
            invalid.add(path, value, f"Member must satisfy enum value set: [{', '.join(enum)}]")
        pattern = metadata.get("pattern")
        if pattern and not _pattern(pattern).fullmatch(value):
            invalid.add(path, value, f"Member must satisfy regular expression pattern: {pattern}")
    if kind == "list":
        for index, item in enumerate(value):
            _validate(shape.member, item, f"{path}.{index + 1}.member", invalid)  # type: ignore[attr-defined]
    if kind == "map":
        for key, item in value.items():
            _validate(shape.key, key, f"{path}.key", invalid)  # type: ignore[attr-defined]
            _validate(shape.value, item, f"{path}.{key}", invalid)  # type: ignore[attr-defined]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    # The service anchors the model's patterns (full match).  Java's \p{ASCII} has no ``re`` spelling.
    return re.compile(pattern.replace(r"\p{ASCII}", r"[\x00-\x7F]"), re.DOTALL)


def iter_chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """Yield ``data`` in chunks of ``size`` bytes (a streamed response body)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
