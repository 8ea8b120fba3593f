"""The REST-JSON protocol layer, checked against botocore's own serializer and parser.

Requests are built by botocore's serializer for the ``medical-imaging`` model (exactly what boto3 puts
on the wire), parsed by ``emulator.protocol``, and responses serialized by the emulator are read back
by botocore's parser: a change in the model that the emulator does not follow fails here first.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from emulator.exceptions import ConflictException, ResourceNotFoundException, ValidationException
from emulator.protocol import Protocol, StreamingBody, service_model

pytestmark = pytest.mark.unit

DATASTORE = "0123456789abcdef0123456789abcdef"
IMAGE_SET = "fedcba9876543210fedcba9876543210"
PROTOCOL = Protocol()


def wire(operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """What boto3 sends for ``operation`` with ``params``: parsed back by the emulator."""
    model = service_model().operation_model(operation)
    request = create_serializer("rest-json").serialize_to_request(params, model)
    split = urlsplit(
        request["url_path"] + ("?" + _query(request["query_string"]) if request["query_string"] else "")
    )
    found, labels = PROTOCOL.route(request["method"], split.path)
    assert found.name == operation
    body = request["body"] if isinstance(request["body"], bytes) else request["body"].encode()
    return PROTOCOL.parse_request(found, labels, parse_qs(split.query), dict(request["headers"]), body)


def _query(query: dict[str, Any]) -> str:
    return urlencode(query, doseq=True)


def test_every_operation_of_the_model_has_a_route() -> None:
    # Given botocore's model
    model = service_model()
    # Then each of its operations is routed back to itself from its own request URI
    assert len(model.operation_names) == 18
    for name in model.operation_names:
        operation = model.operation_model(name)
        path = operation.http["requestUri"].split("?")[0]
        concrete = path.replace(
            "{resourceArn}", "arn%3Aaws%3Amedical-imaging%3Aus-east-1%3A1%3Adatastore%2Fx"
        )
        for label in ("datastoreId", "imageSetId", "sourceImageSetId", "jobId"):
            concrete = concrete.replace("{" + label + "}", DATASTORE)
        found, _ = PROTOCOL.route(operation.http["method"], concrete)
        assert found.name == name


def test_uri_labels_are_percent_decoded_after_splitting() -> None:
    # Given an image set ARN, whose slashes botocore percent-encodes in the path
    arn = f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{DATASTORE}/imageset/{IMAGE_SET}"
    # When boto3's request is parsed
    params = wire("ListTagsForResource", {"resourceArn": arn})
    # Then the label is the whole ARN
    assert params == {"resourceArn": arn}


def test_querystring_members_and_payload_structures_are_parsed() -> None:
    # Given an update with querystring members and a blob inside the payload structure
    updates = {"DICOMUpdates": {"updatableAttributes": b'{"SchemaVersion":1.1}'}}
    # When parsed
    params = wire(
        "UpdateImageSetMetadata",
        {
            "datastoreId": DATASTORE,
            "imageSetId": IMAGE_SET,
            "latestVersionId": "3",
            "force": True,
            "updateImageSetMetadataUpdates": updates,
        },
    )
    # Then every member has its Python type back
    assert params["latestVersionId"] == "3"
    assert params["force"] is True
    assert params["updateImageSetMetadataUpdates"] == updates


def test_timestamps_in_a_body_union_become_aware_datetimes() -> None:
    # Given a search on createdAt (epoch seconds on the wire)
    low, high = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
    criteria = {"filters": [{"values": [{"createdAt": low}, {"createdAt": high}], "operator": "BETWEEN"}]}
    # When parsed
    params = wire("SearchImageSets", {"datastoreId": DATASTORE, "searchCriteria": criteria, "maxResults": 5})
    # Then the values are the same instants
    values = params["searchCriteria"]["filters"][0]["values"]
    assert [v["createdAt"] for v in values] == [low, high]
    assert params["maxResults"] == 5


@pytest.mark.parametrize(
    ("params", "words"),
    [
        (
            {"datastoreName": "bad name!"},
            "datastoreName' failed to satisfy constraint: Member must satisfy regular",
        ),
        ({"datastoreName": "x" * 257}, "length less than or equal to 256"),
        (
            {"datastoreName": "ok", "losslessStorageFormat": "PNG"},
            "enum value set: [HTJ2K, JPEG_2000_LOSSLESS]",
        ),
    ],
)
def test_constraints_of_the_model_are_enforced(params: dict[str, Any], words: str) -> None:
    # Given a request that breaks a constraint botocore's client does not check
    operation = service_model().operation_model("CreateDatastore")
    body = json.dumps({"clientToken": "token-1", **params}).encode()
    # When parsed / Then the service's ValidationException names the member and the constraint
    with pytest.raises(ValidationException, match="1 validation error detected") as error:
        PROTOCOL.parse_request(operation, {}, {}, {}, body)
    assert words in error.value.message


def test_a_missing_required_member_and_two_union_members_are_refused() -> None:
    operation = service_model().operation_model("UpdateImageSetMetadata")
    labels = {"datastoreId": DATASTORE, "imageSetId": IMAGE_SET}
    both = {
        "revertToVersionId": "1",
        "DICOMUpdates": {"updatableAttributes": base64.b64encode(b"{}").decode()},
    }
    # When latestVersionId is missing and the union has two members
    with pytest.raises(ValidationException) as error:
        PROTOCOL.parse_request(operation, labels, {}, {}, json.dumps(both).encode())
    # Then both problems are reported
    assert "latestVersionId' failed to satisfy constraint: Member must not be null" in error.value.message
    assert "Exactly one member of the union must be set" in error.value.message


def test_malformed_json_and_unknown_members_are_validation_errors() -> None:
    operation = service_model().operation_model("CreateDatastore")
    with pytest.raises(ValidationException, match="not valid JSON"):
        PROTOCOL.parse_request(operation, {}, {}, {}, b"{")
    with pytest.raises(ValidationException, match="Unknown member 'colour'"):
        PROTOCOL.parse_request(
            operation, {}, {}, {}, b'{"datastoreName": "a", "clientToken": "t", "colour": "red"}'
        )


def test_an_unknown_path_is_not_found() -> None:
    with pytest.raises(ResourceNotFoundException):
        PROTOCOL.route("GET", "/no/such/operation")


def _parsed(operation_name: str, output: dict[str, Any]) -> dict[str, Any]:
    operation = service_model().operation_model(operation_name)
    response = PROTOCOL.serialize_response(operation, output)
    body = b"".join(response.stream) if response.stream is not None else response.body
    http = {"status_code": response.status, "headers": response.headers, "body": body}
    parsed: dict[str, Any] = create_parser("rest-json").parse(http, operation.output_shape)
    return parsed


def test_responses_read_back_through_botocore() -> None:
    # Given a GetImageSet output with datetimes
    created = datetime(2024, 3, 14, 0, 1, 0, 123000, tzinfo=UTC)
    output = {
        "datastoreId": DATASTORE,
        "imageSetId": IMAGE_SET,
        "versionId": "1",
        "imageSetState": "ACTIVE",
        "imageSetWorkflowStatus": "CREATED",
        "createdAt": created,
        "isPrimary": True,
    }
    # When serialized and parsed by botocore
    parsed = _parsed("GetImageSet", output)
    # Then boto3 sees the same values (timestamps as epoch seconds with milliseconds)
    assert parsed["createdAt"] == created
    assert parsed["isPrimary"] is True
    assert parsed["imageSetWorkflowStatus"] == "CREATED"


def test_streamed_and_header_members_of_a_payload_response() -> None:
    # Given a frame streamed in chunks, with its content type
    output = {
        "imageFrameBlob": StreamingBody(iter([b"\xff\x4f", b"\xff\x51"]), 4),
        "contentType": "image/jph",
    }
    # When serialized
    operation = service_model().operation_model("GetImageFrame")
    response = PROTOCOL.serialize_response(operation, output)
    # Then the body is streamed with its length and the content type is a header
    assert response.content_length == 4
    assert response.headers["Content-Type"] == "image/jph"
    assert b"".join(response.stream or []) == b"\xff\x4f\xff\x51"


def test_tagging_answers_204_with_no_body() -> None:
    operation = service_model().operation_model("TagResource")
    response = PROTOCOL.serialize_response(operation, {})
    assert (response.status, response.body) == (204, b"")


def test_errors_carry_the_code_botocore_reads() -> None:
    # Given a ConflictException
    response = Protocol.serialize_error(ConflictException("Image set is LOCKED"))
    # When botocore parses it
    http = {"status_code": response.status, "headers": response.headers, "body": response.body}
    parsed = create_parser("rest-json").parse(http, None)
    # Then the code, message and status are the model's
    assert parsed["Error"]["Code"] == "ConflictException"
    assert parsed["Error"]["Message"] == "Image set is LOCKED"
    assert response.status == 409
