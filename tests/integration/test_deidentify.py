"""Deidentify end to end: the handler against moto (S3, DynamoDB, EventBridge, Secrets Manager) and the
emulator, on image sets really imported through StartImport and announced by ImportCompleted.

Each test imports files, takes the "Image Set Imported" events ImportCompleted put on the pipeline bus,
hands them to ``functions.deidentify.app.lambda_handler`` and checks what HealthImaging holds afterwards:
the final image set's metadata and every one of its versions, the original deleted, the record, the
report and the "Image Set Ready" event.
"""

from __future__ import annotations

import gzip
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from ahi_pipeline.pseudonyms import Pseudonymizer
from ahi_pipeline.runtime import reset_environment
from emulator.server import Emulator
from tests.emulator import helpers
from tests.integration.conftest import REGION, FakeContext, failed_ids
from tests.integration.test_import_completed import (
    CompletionStack,
    by_type,
    make_completion,  # noqa: F401 - the fixture
)
from tests.integration.test_start_import import bundled, dicom_files

pytestmark = pytest.mark.integration

#: Distinct identifying values put in the synthetic series (none of them may survive).
PHI = {
    "PatientName": "Vulnerable^Victoria^Q",
    "PatientID": "MRN-4417-2208",
    "PatientBirthDate": "19610714",
    "OtherPatientIDs": ["ALT-99812", "ALT-99813"],
    "AccessionNumber": "ACC-55501-X",
    "InstitutionName": "Saint Elsewhere General Hospital",
    "InstitutionAddress": "12 Quayside Lane, Porthaven",
    "ReferringPhysicianName": "Strangelove^Merkwurdig",
    "OperatorsName": "Technologist^Trudy",
    "StudyID": "STUDY-7731",
    "StationName": "CT-PORTHAVEN-02",
    "PatientAddress": "4 Rookery Close, Porthaven",
    "PatientTelephoneNumbers": "+44 1632 960983",
    "AdditionalPatientHistory": "History given by daughter Wilhelmina",
}


@dataclass
class DeidStack:
    completion: CompletionStack
    secret_arn: str
    moto_url: str

    @property
    def ahi(self) -> Any:
        return self.completion.ingest.ahi

    @property
    def datastore_id(self) -> str:
        return self.completion.ingest.datastore_id

    def imported(self, files: dict[str, bytes]) -> list[str]:
        """Import ``files`` and handle the job; the bodies of the "Image Set Imported" events."""
        job_id = self.completion.import_files(files)
        assert self.completion.completed(self.completion.job_event(job_id)) == {"batchItemFailures": []}
        return [
            json.dumps(event)
            for event in self.completion.bus_events()
            if event["detail-type"] == "Image Set Imported"
        ]

    def deidentify(self, *bodies: str) -> dict[str, Any]:
        from functions.deidentify.app import lambda_handler  # noqa: PLC0415 - after the env is set

        event = self.completion.sqs_event(*bodies)
        for record in event["Records"]:
            record["eventSourceARN"] = "arn:aws:sqs:us-east-1:123456789012:DeidentifyQueue"
        response: dict[str, Any] = lambda_handler(event, FakeContext("Deidentify"))
        return response

    def metadata(self, image_set_id: str, version: str | None = None) -> dict[str, Any]:
        params = {"datastoreId": self.datastore_id, "imageSetId": image_set_id}
        if version:
            params["versionId"] = version
        blob = self.ahi.get_image_set_metadata(**params)["imageSetMetadataBlob"].read()
        document: dict[str, Any] = json.loads(gzip.decompress(blob))
        return document

    def all_versions_text(self, image_set_id: str) -> str:
        versions = self.ahi.list_image_set_versions(datastoreId=self.datastore_id, imageSetId=image_set_id)[
            "imageSetPropertiesList"
        ]
        return "\n".join(json.dumps(self.metadata(image_set_id, v["versionId"])) for v in versions)

    def ready(self) -> list[dict[str, Any]]:
        return by_type(self.completion.bus_events(), "Image Set Ready")

    def pseudonymizer(self) -> Pseudonymizer:
        """The pseudonymizer of this stack's key, as the stage reads it."""
        manager = boto3.client("secretsmanager", region_name=REGION, endpoint_url=self.moto_url)
        return Pseudonymizer.from_text(manager.get_secret_value(SecretId=self.secret_arn)["SecretString"])


@pytest.fixture
def make_deid(
    make_completion: Callable[..., CompletionStack],  # noqa: F811 - the fixture imported above
    moto_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., DeidStack]]:
    def make(emulator: Emulator, secret: str | None = None, **environment: str) -> DeidStack:
        completion = make_completion(emulator)
        manager = boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto_url)
        arn = manager.create_secret(
            Name=f"deid-{secrets.token_hex(4)}", SecretString=secret or secrets.token_urlsafe(48)
        )["ARN"]
        for name, value in {
            "DEID_KEY_SECRET_ARN": arn,
            "DEID_OPTIONS": "",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_url,
            **environment,
        }.items():
            monkeypatch.setenv(name, value)
        reset_environment()
        return DeidStack(completion, arn, moto_url)

    yield make
    reset_environment()


@pytest.fixture
def deid(make_deid: Callable[..., DeidStack], emulator: Emulator) -> DeidStack:
    return make_deid(emulator)


def synthetic_series(count: int = 3) -> dict[str, bytes]:
    """A synthetic CT series carrying every value of :data:`PHI`, a private tag and a sequence."""
    study = helpers.SyntheticStudy()
    files = {}
    for number, dataset in enumerate(study.series(count), start=1):
        for keyword, value in PHI.items():
            setattr(dataset, keyword, value)
        block = dataset.private_block(0x0019, "SYNTHETIC_PHI_01", create=True)
        block.add_new(0x10, "LO", "Private note about Victoria Vulnerable")
        from pydicom.dataset import Dataset  # noqa: PLC0415

        item = Dataset()
        item.ReferencedSOPClassUID = dataset.SOPClassUID
        item.ReferencedSOPInstanceUID = dataset.SOPInstanceUID
        dataset.ReferencedImageSequence = [item]
        files[f"incoming/phi/IM{number:04d}.dcm"] = helpers.p10(dataset)
    return files


# ------------------------------------------------------------------------------------ the happy path
@pytest.mark.parametrize(
    "options",
    [
        pytest.param("", id="basic"),
        pytest.param(
            "RetainLongitudinalModifiedDates,RetainPatientCharacteristics,CleanDescriptors", id="default"
        ),
        pytest.param("RetainUIDs,RetainDeviceIdentity,RetainLongitudinalFullDates", id="retain"),
    ],
)
def test_a_series_full_of_identifiers_leaves_none_in_any_version_of_the_result(
    make_deid: Callable[..., DeidStack], emulator: Emulator, options: str
) -> None:
    # Given a synthetic series with a distinct identifying value in many Basic Profile attributes,
    # a private attribute and a sequence, imported and announced, and a profile with those options
    deid = make_deid(emulator, DEID_OPTIONS=options)
    [body] = deid.imported(synthetic_series())
    source = json.loads(body)["detail"]["imageSetId"]
    original_text = json.dumps(deid.metadata(source))
    assert "MRN-4417-2208" in original_text

    # When Deidentify handles its event
    assert deid.deidentify(body) == {"batchItemFailures": []}

    # Then "Image Set Ready" names a new image set, and the original is deleted
    [ready] = deid.ready()
    final = ready["imageSetId"]
    assert (ready["sourceImageSetId"], ready["deidentification"]["status"]) == (source, "deidentified")
    assert final != source
    state = deid.ahi.get_image_set(datastoreId=deid.datastore_id, imageSetId=source)["imageSetState"]
    assert state == "DELETED"
    # … the final image set has one version, and no identifying value is anywhere in it
    history = deid.all_versions_text(final)
    assert history.count('"SchemaVersion"') == 1
    kept = {"StationName"} if "RetainDeviceIdentity" in options else set()
    for value in [*(v for k, v in PHI.items() if k not in kept), "Victoria Vulnerable", "SYNTHETIC_PHI_01"]:
        for part in value if isinstance(value, list) else [value]:
            assert part.casefold() not in history.casefold(), part
    document = deid.metadata(final)
    assert document["Patient"]["DICOM"]["PatientIdentityRemoved"] == "YES"
    assert document["Patient"]["DICOM"]["PatientName"].startswith("ANON^")
    # … the record and the report say what was done, without PHI
    record = deid.completion.item(f"imageset#{source}")
    assert (record["state"], record["finalImageSetId"]) == ("READY", final)
    report_text = json.dumps(deid.completion.report_at(record["reportUri"]))
    assert all(str(v).casefold() not in report_text.casefold() for v in PHI.values() if isinstance(v, str))
    report = json.loads(report_text)
    assert report["versionsCreated"] >= 2
    assert report["calls"]["UpdateImageSetMetadata"] == report["versionsCreated"]
    assert report["calls"]["CopyImageSet"] == report["calls"]["DeleteImageSet"] == 1


BUNDLED = (
    "CT_small.dcm",
    "MR_small.dcm",
    "SC_rgb.dcm",
    "693_J2KI.dcm",  # a PatientName that is already "ANON…"
    "MR2_J2KI.dcm",  # a removed serial number "00000" inside kept decimals
    "examples_overlay.dcm",  # a 24 KB OverlayData: emptied, then removed
    "examples_ybr_color.dcm",  # a 28 KB private text: emptied, then removed
)


def test_bundled_files_are_deidentified_and_announced(deid: DeidStack) -> None:
    # Given pydicom's bundled files of several modalities and oddities, imported and announced
    bodies = deid.imported({f"incoming/b/{name}": bundled(name) for name in BUNDLED})

    # When Deidentify handles their events
    assert deid.deidentify(*bodies) == {"batchItemFailures": []}

    # Then each is Ready, de-identified, with the profile named
    ready = deid.ready()
    assert len(ready) == len(bodies) == len(BUNDLED)
    for event in ready:
        patient = deid.metadata(event["imageSetId"])["Patient"]["DICOM"]
        assert patient["PatientIdentityRemoved"] == "YES"
        assert patient["DeidentificationMethod"][0].startswith("113100 ")


def test_the_same_event_twice_gives_the_same_result_and_no_extra_versions(deid: DeidStack) -> None:
    # Given an image set de-identified once
    [body] = deid.imported(dicom_files(2, folder="incoming/replay/"))
    assert deid.deidentify(body) == {"batchItemFailures": []}
    [ready] = deid.ready()
    before = deid.ahi.list_image_set_versions(datastoreId=deid.datastore_id, imageSetId=ready["imageSetId"])

    # When the event arrives again
    assert deid.deidentify(body) == {"batchItemFailures": []}

    # Then nothing is announced again, and the result has no new version
    assert deid.ready() == []
    after = deid.ahi.list_image_set_versions(datastoreId=deid.datastore_id, imageSetId=ready["imageSetId"])
    assert len(after["imageSetPropertiesList"]) == len(before["imageSetPropertiesList"]) == 1


def test_disabled_deidentification_announces_the_image_set_as_skipped(
    make_deid: Callable[..., DeidStack], emulator: Emulator
) -> None:
    # Given de-identification turned off
    deid = make_deid(emulator, DEIDENTIFY="false")
    [body] = deid.imported(dicom_files(1, folder="incoming/off/"))
    source = json.loads(body)["detail"]["imageSetId"]

    # When its event is handled, then it is Ready at once, unchanged, with status skipped
    assert deid.deidentify(body) == {"batchItemFailures": []}
    [ready] = deid.ready()
    assert (ready["imageSetId"], ready["deidentification"]["status"]) == (source, "skipped")
    versions = deid.ahi.list_image_set_versions(datastoreId=deid.datastore_id, imageSetId=source)
    assert len(versions["imageSetPropertiesList"]) == 1


def test_burned_in_annotation_fails_the_image_set_without_announcing_it(deid: DeidStack) -> None:
    # Given an image set whose instances say the pixels carry burned-in annotation
    study = helpers.SyntheticStudy()
    files = {}
    for number, dataset in enumerate(study.series(1), start=1):
        dataset.BurnedInAnnotation = "YES"
        files[f"incoming/burned/IM{number}.dcm"] = helpers.p10(dataset)
    [body] = deid.imported(files)
    source = json.loads(body)["detail"]["imageSetId"]

    # When its event is handled
    assert deid.deidentify(body) == {"batchItemFailures": []}

    # Then no Ready, the record is FAILED with the reason, the image set is tagged failed
    assert deid.ready() == []
    record = deid.completion.item(f"imageset#{source}")
    assert record["state"] == "FAILED"
    assert "BurnedInAnnotation" in record["error"]
    arn = deid.ahi.get_image_set(datastoreId=deid.datastore_id, imageSetId=source)["imageSetArn"]
    assert deid.ahi.list_tags_for_resource(resourceArn=arn)["tags"]["pipeline:deidentification"] == "failed"


def test_a_concurrent_update_makes_the_stage_re_plan(
    deid: DeidStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an imported image set, and someone else updating it right before the stage's first update
    from ahi_pipeline.image_set_gateway import ImageSetGateway  # noqa: PLC0415

    [body] = deid.imported(synthetic_series(1))
    source = json.loads(body)["detail"]["imageSetId"]
    real_update = ImageSetGateway.update
    interfered: list[str] = []

    def update(self: ImageSetGateway, datastore_id: str, image_set_id: str, latest: str, payload: Any) -> str:
        if not interfered:
            interfered.append(latest)
            outside = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "Victoria's scan"}}}
            deid.ahi.update_image_set_metadata(
                datastoreId=datastore_id,
                imageSetId=image_set_id,
                latestVersionId=latest,
                updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(outside)}},
            )
            helpers.wait_image_set(deid.ahi, datastore_id, image_set_id)
        return real_update(self, datastore_id, image_set_id, latest, payload)

    monkeypatch.setattr(ImageSetGateway, "update", update)

    # When Deidentify handles the event
    assert deid.deidentify(body) == {"batchItemFailures": []}

    # Then it met the conflict, re-planned, and the result holds neither the original nor the new value
    [ready] = deid.ready()
    report = deid.completion.report_at(deid.completion.item(f"imageset#{source}")["reportUri"])
    assert report["conflicts"] == 1
    text = deid.all_versions_text(ready["imageSetId"]).casefold()
    assert "victoria" not in text
    assert "mrn-4417-2208" not in text


def test_throttled_healthimaging_still_deidentifies(
    make_deid: Callable[..., DeidStack], start_emulator: Callable[..., Emulator]
) -> None:
    # Given HealthImaging enforcing its documented rates, 20 times faster
    deid = make_deid(start_emulator(throttling=True, time_scale=20))
    [body] = deid.imported(dicom_files(2, folder="incoming/throttled/"))

    # When Deidentify handles the event, then the image set is Ready
    assert deid.deidentify(body) == {"batchItemFailures": []}
    assert len(deid.ready()) == 1


def test_a_poison_message_fails_alone(deid: DeidStack) -> None:
    # Given a good event and a message that is not a pipeline event
    [body] = deid.imported(dicom_files(1, folder="incoming/poison/"))

    # When both are handled, then only the poison one fails (for the dead-letter queue)
    response = deid.deidentify(body, json.dumps({"source": "aws.s3", "detail-type": "Object Created"}))
    assert len(failed_ids(response)) == 1
    assert len(deid.ready()) == 1


def test_the_sample_event_of_events_runs(deid: DeidStack) -> None:
    # Given events/deidentify.json pointed at a real imported image set of this stack
    [body] = deid.imported(dicom_files(1, folder="incoming/sample/"))
    real = json.loads(body)["detail"]
    with open("events/deidentify.json") as handle:
        event = json.load(handle)
    sample = json.loads(event["Records"][0]["body"])
    sample["detail"].update({k: real[k] for k in ("datastoreId", "imageSetId", "importJobId", "batchId")})
    event["Records"][0]["body"] = json.dumps(sample)

    # When Deidentify handles it, then the image set is Ready
    assert deid.deidentify(event["Records"][0]["body"]) == {"batchItemFailures": []}
    assert len(deid.ready()) == 1


@pytest.mark.parametrize(
    "options",
    [
        pytest.param("", id="basic"),
        pytest.param(
            "RetainLongitudinalModifiedDates,RetainPatientCharacteristics,CleanDescriptors", id="default"
        ),
    ],
)
def test_every_basic_profile_attribute_is_handled_by_the_service(
    make_deid: Callable[..., DeidStack], emulator: Emulator, options: str
) -> None:
    # Given a series whose first instance holds a distinct value in every attribute of PS3.15 Table
    # E.1-1 that image set metadata can hold (lists where the VM allows, a nested UID and name in every
    # sequence, private elements), imported through the service
    from tests.unit.test_deid_plan import synthetic_datasets, synthetic_texts  # noqa: PLC0415

    # (with the default options, a key whose date offset moves one DT onto another's original value: see
    # test_a_shifted_date_equal_to_another_original_date_is_not_a_leak)
    secret = "collision-key-000082............" if options else None
    deid = make_deid(emulator, secret, DEID_OPTIONS=options)
    first, sibling, _ = synthetic_datasets()
    with helpers.lenient_values():
        files = {"incoming/every/IM1.dcm": helpers.p10(first), "incoming/every/IM2.dcm": helpers.p10(sibling)}
    # (its first instance's series-level values differ from its sibling's: two image sets)
    bodies = deid.imported(files)
    sources = [json.loads(body)["detail"]["imageSetId"] for body in bodies]
    originals = {source: deid.metadata(source) for source in sources}
    original = json.dumps(list(originals.values()))
    # (short numbers are left out: "185" is inside many a UID of any document)
    distinct = [text for text in synthetic_texts() if any(c.isalpha() for c in text) or len(text) >= 8]
    planted = [text for text in distinct if text in original]
    assert len(planted) > 300

    # When Deidentify handles their events
    assert deid.deidentify(*bodies) == {"batchItemFailures": []}

    # Then each image set is Ready, and no planted value is in any version of the results, except what
    # the options keep by design (the Retain options' attributes, descriptors with no identifier)
    ready = deid.ready()
    assert sorted(event["sourceImageSetId"] for event in ready) == sorted(sources)
    history = "\n".join(deid.all_versions_text(event["imageSetId"]) for event in ready)
    assert all(deid.completion.item(f"imageset#{source}")["state"] == "READY" for source in sources)
    left = [text for text in planted if text in history]
    if not options:
        assert left == []
    else:  # what is left, the options keep or found clean; identity never
        from ahi_pipeline.deid_plan import identifying_values, plan, remaining_identifiers  # noqa: PLC0415
        from ahi_pipeline.deid_profile import load_profile  # noqa: PLC0415

        profile = load_profile(options)
        pseudonyms = deid.pseudonymizer()
        for event in ready:
            source = originals[event["sourceImageSetId"]]
            identifiers = identifying_values(source, profile)
            # what the plan writes is not searched (a shifted date may equal another original date)
            produced = plan(source, source, profile, pseudonyms).produced()
            assert remaining_identifiers(deid.metadata(event["imageSetId"]), identifiers, produced) == []
        for text in ("QZ9003Q", "QZ9004Q", *(t for t in planted if "^" in t)):  # accession, study id, names
            assert text not in history, text
