"""Background execution: delayed state transitions and import-job workers.

Asynchronous operations of the service (data store creation and deletion, metadata updates, copies,
deletes) finish after ``transition_delay`` seconds on one timer thread; import jobs run on a pool of
``import_workers`` threads.  Both stop cleanly with ``shutdown``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)


class Scheduler:
    """Runs callables later (one timer thread) or now (the import worker pool)."""

    def __init__(self, import_workers: int = 1) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._condition = threading.Condition()
        self._stopped = False
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name="emulator-timer", daemon=True)
        self._thread.start()
        self._workers = ThreadPoolExecutor(max_workers=import_workers, thread_name_prefix="emulator-import")
        self._futures: set[Future[None]] = set()

    def later(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the timer thread after ``delay`` seconds."""
        with self._condition:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._counter), action))
            self._pending += 1
            self._condition.notify()

    def submit(self, action: Callable[[], None]) -> None:
        """Run ``action`` on an import worker as soon as one is free."""
        future = self._workers.submit(_logged(action))
        with self._condition:
            self._futures.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._condition:
            self._futures.discard(future)
            self._condition.notify_all()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._condition.wait(timeout)
                if self._stopped:
                    return
                _, _, action = heapq.heappop(self._heap)
            _logged(action)()
            with self._condition:
                self._pending -= 1
                self._condition.notify_all()

    def idle(self, timeout: float = 30.0) -> bool:
        """Wait until no timer or import work is pending; True when idle before ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._pending or self._futures:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True

    def shutdown(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify_all()
        self._thread.join(timeout=5)
        self._workers.shutdown(wait=True, cancel_futures=True)


def _logged(action: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            action()
        except Exception:
            log.exception("background task failed")

    return run
