"""Unit tests of ahi_pipeline.observability: X-Ray entities carried to worker threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aws_xray_sdk import global_sdk_config
from aws_xray_sdk.core.context import Context
from aws_xray_sdk.core.recorder import AWSXRayRecorder

from ahi_pipeline.observability import in_this_trace

pytestmark = pytest.mark.unit


class Kept:
    """An X-Ray emitter that keeps the entities the recorder sends (instead of sending UDP datagrams)."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send_entity(self, entity: Any) -> None:
        self.sent.append(entity)

    def set_daemon_address(self, address: str | None) -> None:
        pass


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[AWSXRayRecorder]:
    """A real X-Ray recorder, the SDK enabled (Powertools disables it process-wide when tracing is off)."""
    was_enabled = global_sdk_config.sdk_enabled()
    monkeypatch.delenv("AWS_XRAY_SDK_ENABLED", raising=False)
    global_sdk_config.set_sdk_enabled(True)
    recorder = AWSXRayRecorder()
    recorder.configure(sampling=False, context=Context(), emitter=Kept(), context_missing="LOG_ERROR")
    yield recorder
    global_sdk_config.set_sdk_enabled(was_enabled)


def test_worker_threads_record_under_the_callers_subsegment(recorder: AWSXRayRecorder) -> None:
    # Given a segment and a subsegment open on this thread
    recorder.begin_segment("RenderThumbnail")
    with recorder.in_subsegment("## render_image_set") as parent:

        def fetch(index: int) -> tuple[str, str]:
            with recorder.in_subsegment(f"GetImageFrame {index}") as child:
                return child.parent_id, threading.current_thread().name

        # When 8 workers run a function that opens a subsegment, carried by in_this_trace
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(in_this_trace(fetch, recorder), range(8)))

    # Then each one is a child of the caller's subsegment, recorded on other threads
    assert {parent_id for parent_id, _ in results} == {parent.id}
    assert threading.current_thread().name not in {name for _, name in results}
    assert sorted(s.name for s in parent.subsegments) == [f"GetImageFrame {i}" for i in range(8)]
    recorder.end_segment()


def test_without_a_carried_entity_the_workers_have_no_parent(recorder: AWSXRayRecorder) -> None:
    # Given the same, but the function given to the workers as it is (what in_this_trace prevents)
    recorder.begin_segment("RenderThumbnail")
    with recorder.in_subsegment("## render_image_set") as parent:

        def current(_: int) -> Any:
            return recorder.get_trace_entity()

        with ThreadPoolExecutor(2) as pool:
            found = list(pool.map(current, range(2)))

    # Then the workers see no entity at all
    assert found == [None, None]
    assert parent.subsegments == []
    recorder.end_segment()


def test_with_no_current_entity_the_function_is_returned_as_it_is(recorder: AWSXRayRecorder) -> None:
    # Given no open segment (and, for the default recorder, tracing disabled outside Lambda)
    def work() -> int:
        return 7

    # Then there is nothing to carry
    assert in_this_trace(work, recorder) is work
    assert in_this_trace(work) is work
