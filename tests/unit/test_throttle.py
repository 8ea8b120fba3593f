"""Token buckets and fault injection (emulator/throttle.py)."""

from __future__ import annotations

import threading
import time

import botocore.session
import pytest

from emulator.exceptions import InternalServerException, ServiceError, ThrottlingException
from emulator.throttle import RATES, RequestGate, parse_fault_spec

pytestmark = pytest.mark.unit


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def admitted(gate: RequestGate, operation: str, times: int) -> int:
    """How many of ``times`` requests get through."""
    count = 0
    for _ in range(times):
        try:
            gate.admit(operation)
        except ThrottlingException:
            continue
        count += 1
    return count


# --------------------------------------------------------------------------------------------------
# The rate table


def test_rates_cover_every_operation_of_the_model() -> None:
    # Given the operations of botocore's model
    operations = botocore.session.get_session().get_service_model("medical-imaging").operation_names

    # Then each has a (rate, burst) row, and the DICOMweb GetDICOMInstance too
    assert set(operations) <= set(RATES)
    assert "GetDICOMInstance" in RATES


@pytest.mark.parametrize(
    ("operation", "rate", "burst"),
    [
        ("CreateDatastore", 0.085, 1),
        ("DeleteDatastore", 0.085, 1),
        ("StartDICOMImportJob", 0.25, 1),
        ("UpdateImageSetMetadata", 0.25, 1),
        ("CopyImageSet", 0.25, 1),
        ("DeleteImageSet", 0.25, 1),
        ("ListDatastores", 5, 10),
        ("GetDatastore", 10, 20),
        ("SearchImageSets", 25, 50),
        ("GetImageSetMetadata", 50, 100),
        ("GetImageFrame", 1000, 2000),
        ("GetDICOMInstance", 50, 100),
        ("TagResource", 10, 20),
    ],
)
def test_rates_are_the_platform_table(operation: str, rate: float, burst: float) -> None:
    # Then the row is the one of platform spec 7.3
    assert RATES[operation] == (rate, burst)


# --------------------------------------------------------------------------------------------------
# Buckets


def test_throttling_is_off_by_default() -> None:
    # Given a default gate
    gate = RequestGate()

    # When calling a 0.25 TPS operation many times at once
    # Then nothing is throttled
    assert admitted(gate, "StartDICOMImportJob", 100) == 100


def test_burst_then_throttling_exception() -> None:
    # Given throttling on and a frozen clock
    gate = RequestGate(throttling=True, clock=FakeClock())

    # When calling GetDatastore (burst 20) 21 times at once
    count = admitted(gate, "GetDatastore", 20)
    with pytest.raises(ThrottlingException) as caught:
        gate.admit("GetDatastore")

    # Then the burst passes and the next call gets the service's error
    assert count == 20
    assert caught.value.message == "Rate exceeded"
    assert (caught.value.code, caught.value.status) == ("ThrottlingException", 429)


def test_refill_at_the_rate() -> None:
    # Given StartDICOMImportJob (0.25 TPS, burst 1) with its token spent
    clock = FakeClock()
    gate = RequestGate(throttling=True, clock=clock)
    gate.admit("StartDICOMImportJob")

    # When 3.9 s pass, then 0.2 s more
    clock.advance(3.9)
    early = admitted(gate, "StartDICOMImportJob", 1)
    clock.advance(0.2)
    later = admitted(gate, "StartDICOMImportJob", 1)

    # Then a token comes back after 4 s, not before
    assert (early, later) == (0, 1)


def test_refill_never_exceeds_the_burst() -> None:
    # Given GetDatastore (10 TPS, burst 20) idle for an hour
    clock = FakeClock()
    gate = RequestGate(throttling=True, clock=clock)
    gate.admit("GetDatastore")
    clock.advance(3600)

    # When calling many times at once
    # Then only the burst passes
    assert admitted(gate, "GetDatastore", 50) == 20


def test_time_scale_makes_time_pass_faster() -> None:
    # Given a time scale of 100: a 0.25 TPS bucket refills in 40 ms
    clock = FakeClock()
    gate = RequestGate(throttling=True, time_scale=100, clock=clock)
    gate.admit("UpdateImageSetMetadata")

    # When 39 ms pass, then 2 ms more
    clock.advance(0.039)
    early = admitted(gate, "UpdateImageSetMetadata", 1)
    clock.advance(0.002)
    later = admitted(gate, "UpdateImageSetMetadata", 1)

    # Then the token is back after 40 ms
    assert (early, later) == (0, 1)
    assert gate.time_scale == 100


def test_time_scale_with_the_real_clock_reaches_throttling_and_recovery() -> None:
    # Given the monotonic clock at time scale 100
    gate = RequestGate(throttling=True, time_scale=100)

    # When spending StartDICOMImportJob's token, then waiting 60 ms
    gate.admit("StartDICOMImportJob")
    with pytest.raises(ThrottlingException):
        gate.admit("StartDICOMImportJob")
    time.sleep(0.06)

    # Then the operation recovers
    gate.admit("StartDICOMImportJob")


def test_buckets_are_per_operation() -> None:
    # Given CopyImageSet's token spent
    gate = RequestGate(throttling=True, clock=FakeClock())
    gate.admit("CopyImageSet")

    # When calling other operations
    # Then they have their own buckets
    assert admitted(gate, "CopyImageSet", 1) == 0
    assert admitted(gate, "DeleteImageSet", 1) == 1
    assert admitted(gate, "GetImageFrame", 2000) == 2000


def test_unknown_operations_are_not_throttled() -> None:
    # Given throttling on
    gate = RequestGate(throttling=True, clock=FakeClock())

    # When calling an operation without a row
    # Then it always passes
    assert admitted(gate, "SearchDICOMStudies", 500) == 500


def test_reset_refills_every_bucket() -> None:
    # Given an empty bucket
    gate = RequestGate(throttling=True, clock=FakeClock())
    gate.admit("CreateDatastore")

    # When resetting
    gate.reset()

    # Then the burst is available again
    assert admitted(gate, "CreateDatastore", 2) == 1


def test_throttling_can_be_switched_at_run_time() -> None:
    # Given a gate with throttling off and many calls made
    gate = RequestGate(clock=FakeClock())
    assert admitted(gate, "DeleteDatastore", 5) == 5

    # When switching it on
    gate.throttling = True

    # Then the bucket applies from then on
    assert admitted(gate, "DeleteDatastore", 5) == 1


def test_buckets_are_thread_safe() -> None:
    # Given a frozen clock and 8 threads racing on GetDatastore (burst 20)
    gate = RequestGate(throttling=True, clock=FakeClock())
    counts: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        count = admitted(gate, "GetDatastore", 50)
        with lock:
            counts.append(count)

    # When they all call at once
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly the burst got through
    assert sum(counts) == 20


@pytest.mark.parametrize("scale", [0, -1])
def test_time_scale_must_be_positive(scale: float) -> None:
    # When building a gate with a non-positive time scale
    # Then it is refused
    with pytest.raises(ValueError, match="time_scale"):
        RequestGate(time_scale=scale)


# --------------------------------------------------------------------------------------------------
# Fault injection


def outcomes(gate: RequestGate, operation: str, times: int) -> list[str]:
    results = []
    for _ in range(times):
        try:
            gate.admit(operation)
        except ServiceError as error:
            results.append(error.code)
        else:
            results.append("OK")
    return results


def test_faults_are_reproducible_with_a_seed() -> None:
    # Given two gates with the same faults and seed, and a third with another seed
    faults = {"StartDICOMImportJob": {"ThrottlingException": 0.2, "InternalServerException": 0.05}}
    one, two = RequestGate(fault_rates=faults, seed=7), RequestGate(fault_rates=faults, seed=7)
    other = RequestGate(fault_rates=faults, seed=8)

    # When calling 200 times each
    first, second, third = (outcomes(g, "StartDICOMImportJob", 200) for g in (one, two, other))

    # Then the same seed gives the same sequence
    assert first == second
    assert first != third


def test_fault_frequencies_follow_the_rates() -> None:
    # Given 20 % throttling and 5 % internal errors on one operation
    gate = RequestGate(
        fault_rates={"StartDICOMImportJob": {"ThrottlingException": 0.2, "InternalServerException": 0.05}},
        seed=1,
    )

    # When calling 4000 times
    results = outcomes(gate, "StartDICOMImportJob", 4000)

    # Then the frequencies are close to the rates
    assert results.count("ThrottlingException") / 4000 == pytest.approx(0.2, abs=0.025)
    assert results.count("InternalServerException") / 4000 == pytest.approx(0.05, abs=0.015)


def test_injected_errors_carry_their_codes_and_messages() -> None:
    # Given certain faults
    gate = RequestGate(
        fault_rates={
            "GetImageSet": {"InternalServerException": 1.0},
            "GetDatastore": {"ThrottlingException": 1},
        },
        seed=0,
    )

    # When calling
    with pytest.raises(InternalServerException) as internal:
        gate.admit("GetImageSet")
    with pytest.raises(ThrottlingException) as throttled:
        gate.admit("GetDatastore")

    # Then they look like the service's errors
    assert internal.value.status == 500
    assert "GetImageSet" in internal.value.message
    assert throttled.value.message == "Rate exceeded"


def test_wildcard_applies_everywhere_and_an_operation_entry_overrides_it() -> None:
    # Given internal errors everywhere, but none for GetImageFrame
    gate = RequestGate(
        fault_rates={
            "*": {"InternalServerException": 1.0},
            "GetImageFrame": {"InternalServerException": 0.0},
        },
        seed=0,
    )

    # When calling several operations
    # Then the wildcard applies except where overridden
    assert outcomes(gate, "ListDatastores", 3) == ["InternalServerException"] * 3
    assert outcomes(gate, "SearchDICOMStudies", 1) == ["InternalServerException"]
    assert outcomes(gate, "GetImageFrame", 3) == ["OK"] * 3


def test_faults_apply_without_throttling_and_after_the_bucket() -> None:
    # Given throttling on and a certain internal error on StartDICOMImportJob
    gate = RequestGate(
        throttling=True,
        fault_rates={"StartDICOMImportJob": {"InternalServerException": 1.0}},
        seed=0,
        clock=FakeClock(),
    )

    # When calling twice at once
    # Then the first request takes the token and fails inside; the second is throttled at the door
    assert outcomes(gate, "StartDICOMImportJob", 2) == ["InternalServerException", "ThrottlingException"]


def test_fault_rates_are_exposed_as_a_copy() -> None:
    # Given a gate with faults
    gate = RequestGate(fault_rates={"*": {"InternalServerException": 0.1}})

    # When changing the returned mapping
    gate.fault_rates["*"]["InternalServerException"] = 1.0

    # Then the gate is unchanged
    assert gate.fault_rates == {"*": {"InternalServerException": 0.1}}


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ({"StartDICOMImportJob": {"TeapotException": 0.1}}, "unknown error code"),
        ({"StartImportJob": {"InternalServerException": 0.1}}, "unknown operation"),
        ({"*": {"InternalServerException": 1.5}}, "within"),
        ({"*": {"InternalServerException": -0.1}}, "within"),
        (
            {"*": {"InternalServerException": 0.6}, "GetImageSet": {"ThrottlingException": 0.6}},
            "add up to",
        ),
    ],
)
def test_bad_fault_rates_are_refused(faults: dict[str, dict[str, float]], message: str) -> None:
    # When building a gate with bad fault rates
    # Then it is refused at once
    with pytest.raises(ValueError, match=message):
        RequestGate(fault_rates=faults)


# --------------------------------------------------------------------------------------------------
# The command-line fault specification


def test_parse_fault_spec_of_the_documented_example() -> None:
    # When parsing the example flag
    faults = parse_fault_spec("StartDICOMImportJob:ThrottlingException=0.2,*:InternalServerException=0.01")

    # Then it is the mapping RequestGate takes
    assert faults == {
        "StartDICOMImportJob": {"ThrottlingException": 0.2},
        "*": {"InternalServerException": 0.01},
    }
    RequestGate(fault_rates=faults)


def test_parse_fault_spec_merges_items_and_tolerates_blanks() -> None:
    # When parsing items with spaces, an empty item and two codes for one operation
    faults = parse_fault_spec(
        " GetImageSet : ThrottlingException = 0.1 ,, GetImageSet:InternalServerException=0.2 "
    )

    # Then they are merged per operation
    assert faults == {"GetImageSet": {"ThrottlingException": 0.1, "InternalServerException": 0.2}}


@pytest.mark.parametrize("text", ["", "   ", ","])
def test_parse_fault_spec_of_nothing(text: str) -> None:
    # When parsing blank text
    # Then there are no faults
    assert parse_fault_spec(text) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("StartDICOMImportJob=0.2", "not of the form"),
        ("StartDICOMImportJob:ThrottlingException", "not of the form"),
        ("StartDICOMImportJob:ThrottlingException=", "not of the form"),
        (":ThrottlingException=0.1", "not of the form"),
        ("StartDICOMImportJob:ThrottlingException=often", "not a number"),
        ("StartDICOMImportJob:ThrottlingException=2", "within"),
        ("StartDICOMImportJob:Boom=0.1", "unknown error code"),
        ("StartImport:ThrottlingException=0.1", "unknown operation"),
    ],
)
def test_parse_fault_spec_refuses_bad_items(text: str, message: str) -> None:
    # When parsing a bad item
    # Then a ValueError says what is wrong
    with pytest.raises(ValueError, match=message):
        parse_fault_spec(text)
