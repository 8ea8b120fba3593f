"""Lambda functions run in-process, each in its own sandbox, one invocation at a time.

A :class:`LocalFunction` is one ``AWS::Serverless::Function``: its code folder (``CodeUri``, which is
``LAMBDA_TASK_ROOT`` in Lambda), its layers (their content is what Lambda puts under ``/opt/python``),
its handler and its environment.  :meth:`LocalFunction.invoke` runs the handler the way the Lambda
Python runtime does: the module is imported on the first invocation (the cold start) and kept, the
handler gets the event and a :class:`LambdaContext`, and an exception or a run longer than ``Timeout``
is an error.

Why one invocation at a time, process-wide
------------------------------------------
Every function has its own environment variables, ``sys.path`` and module-level state, and Lambda
gives each its own process.  Here they share one interpreter, so :class:`Sandbox` swaps, under one
process-wide lock, for the duration of an invocation:

* ``os.environ``: the host's non-AWS variables, the variables Lambda defines, the template's
  ``Globals`` + function variables, then ``AWS_ENDPOINT_URL`` pointing at the local endpoint, dummy
  credentials and ``AWS_DISABLE_HOST_PREFIX_INJECTION=true``;
* ``sys.path``: the code folder, then the layers (last layer first, as later layers overwrite earlier
  ones in ``/opt``), then the host's path;
* ``sys.modules``: the modules loaded from any function's code folder or any layer are kept per
  function, so ``app`` of one function never shadows ``app`` of another, and module-level caches
  (settings read at cold start, ``functools.cache`` clients) are never shared between functions;
* the ``logging`` registry: loggers created during a function's invocations (Powertools' ``Logger``
  is ``logging.getLogger(service)`` with its handler) are that function's, so two functions of one
  service each configure their own, and none leaks into the host.  Loggers the host created before
  (a test that imported the same package directly) stay shared;
* optionally ``sys.stdout``/``sys.stderr``, to send the functions' logs to a file.

Invocations of one function are serialized in Lambda too when ``ReservedConcurrentExecutions`` is 1;
here *all* invocations are serialized, which is slower but never changes a result the pipeline relies
on.  Other threads of the process (the endpoint, moto, the emulator) keep running during an
invocation and see the swapped environment; nothing they do depends on it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final, TextIO

from local.template import TemplateError

__all__ = [
    "RESERVED_VARIABLES",
    "FunctionConfig",
    "Invocation",
    "LambdaContext",
    "LocalFunction",
    "Sandbox",
]

log = logging.getLogger(__name__)

#: Variables Lambda reserves: a template may not set them (CloudFormation refuses the function).
RESERVED_VARIABLES: Final = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
#: Host variables that never reach a function (Lambda's environment has none of the host's AWS setup).
_HOST_PREFIXES_DROPPED: Final = ("AWS_", "POWERTOOLS_", "LAMBDA_", "_HANDLER", "_X_AMZN")
DUMMY_CREDENTIALS: Final = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@dataclass(frozen=True)
class FunctionConfig:
    """What the template says about one function, resolved."""

    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    layer_dirs: tuple[Path, ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 3.0
    memory_size: int = 128
    runtime: str = "python3.12"
    reserved_concurrency: int | None = None
    region: str = "us-east-1"

    def __post_init__(self) -> None:
        reserved = sorted(set(self.variables) & RESERVED_VARIABLES)
        if reserved:
            raise TemplateError(f"{self.logical_id}: reserved environment variable(s) {', '.join(reserved)}")
        if "." not in self.handler:
            raise TemplateError(f"{self.logical_id}: Handler {self.handler!r} is not module.function")


class LambdaContext:
    """The context object of the Python runtime (the attributes and the one method it has)."""

    def __init__(self, config: FunctionConfig, request_id: str, deadline: float) -> None:
        self.function_name = config.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = config.arn
        self.memory_limit_in_mb = int(config.memory_size)
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{config.name}"
        self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Invocation:
    """The outcome of one invocation."""

    request_id: str
    response: Any = None
    error: BaseException | None = None
    duration: float = 0.0
    cold_start: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else type(self.error).__name__


class FunctionTimeout(Exception):  # noqa: N818 - named after Lambda's "Task timed out"
    """The handler ran longer than the function's Timeout (Lambda would have stopped it)."""


_LOGGING_LOCK: Final = getattr(logging, "_lock", None) or threading.RLock()


class Sandbox:
    """The process-wide state one invocation swaps in and out (see the module docstring)."""

    lock: Final = threading.RLock()

    def __init__(self, managed_roots: list[Path], log_stream: TextIO | None = None) -> None:
        #: The host's variables when the sandbox was made (``os.environ`` changes during invocations).
        self.host_environ = dict(os.environ)
        self._roots = tuple(str(root.resolve()) + os.sep for root in managed_roots)
        self._owned: dict[int, bool] = {}
        self.log_stream = log_stream

    def add_roots(self, roots: list[Path]) -> None:
        self._roots = tuple({*self._roots, *(str(root.resolve()) + os.sep for root in roots)})
        self._owned.clear()

    def _is_managed(self, module: ModuleType) -> bool:
        key = id(module)
        if key not in self._owned:
            locations = [getattr(module, "__file__", None) or ""]
            locations += [str(entry) for entry in getattr(module, "__path__", None) or []]
            self._owned[key] = any(
                str(location).startswith(self._roots) or (str(location) + os.sep) in self._roots
                for location in locations
                if location
            )
        return self._owned[key]

    def _take_managed(self) -> dict[str, ModuleType]:
        taken = {
            name: module
            for name, module in list(sys.modules.items())
            if module is not None and self._is_managed(module)
        }
        for name in taken:
            del sys.modules[name]
        return taken

    @contextlib.contextmanager
    def enter(self, function: LocalFunction, environment: Mapping[str, str]) -> Iterator[None]:
        """Swap the function's state in for the duration of the block (the lock is held)."""
        with self.lock:
            saved_environ = dict(os.environ)
            saved_path = list(sys.path)
            saved_out, saved_err = sys.stdout, sys.stderr
            host_modules = self._take_managed()
            sys.modules.update(function.modules)
            host_loggers = _loggers_in(function)
            _replace_environ(environment)
            sys.path[:0] = [
                str(function.config.code_dir),
                *(str(d) for d in reversed(function.config.layer_dirs)),
            ]
            if self.log_stream is not None:
                sys.stdout = sys.stderr = self.log_stream
            try:
                yield
            finally:
                if self.log_stream is not None:
                    self.log_stream.flush()
                sys.stdout, sys.stderr = saved_out, saved_err
                sys.path[:] = saved_path
                _replace_environ(saved_environ)
                function.loggers = _loggers_out(host_loggers)
                function.modules = self._take_managed()
                sys.modules.update(host_modules)


def _replace_environ(target: Mapping[str, str]) -> None:
    """Make ``os.environ`` equal ``target``, changing keys before removing any, so that variables both
    have (the dummy credentials, the Region) never disappear for a thread reading them meanwhile."""
    for key, value in target.items():
        if os.environ.get(key) != value:
            os.environ[key] = value
    for key in [key for key in os.environ if key not in target]:
        del os.environ[key]


def _clear_level_caches() -> None:
    manager: Any = logging.Logger.manager
    manager._clear_cache()


def _loggers_in(function: LocalFunction) -> set[str]:
    """Add the function's loggers to the registry; the names that were there before are the host's."""
    with _LOGGING_LOCK:
        registry = logging.Logger.manager.loggerDict
        host = set(registry)
        registry.update(function.loggers)
        _clear_level_caches()
    return host


def _loggers_out(host: set[str]) -> dict[str, Any]:
    """Take the loggers created since :func:`_loggers_in` out of the registry."""
    with _LOGGING_LOCK:
        registry = logging.Logger.manager.loggerDict
        mine = {name: registry[name] for name in list(registry) if name not in host}
        for name in mine:
            del registry[name]
        _clear_level_caches()
    return mine


class LocalFunction:
    """One function of the stack, invocable in-process."""

    def __init__(self, config: FunctionConfig, sandbox: Sandbox, endpoint_url: str) -> None:
        self.config = config
        self.sandbox = sandbox
        self.endpoint_url = endpoint_url
        self.modules: dict[str, ModuleType] = {}
        self.loggers: dict[str, Any] = {}
        self._handler: Callable[[Any, Any], Any] | None = None
        self._in_flight = 0
        self._counter_lock = threading.Lock()
        self.invocations = 0
        self.errors = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def environment(self) -> dict[str, str]:
        """The function's whole environment during an invocation."""
        config = self.config
        host = {
            key: value
            for key, value in self.sandbox.host_environ.items()
            if not key.startswith(_HOST_PREFIXES_DROPPED)
        }
        lambda_defined = {
            "AWS_LAMBDA_FUNCTION_NAME": config.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{time.strftime('%Y/%m/%d')}/[$LATEST]local",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": config.region,
            "AWS_DEFAULT_REGION": config.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{config.runtime}",
            "AWS_SAM_LOCAL": "true",
            "_HANDLER": config.handler,
            "LAMBDA_TASK_ROOT": str(config.code_dir),
            "LAMBDA_RUNTIME_DIR": str(Path(sys.prefix)),
            "TZ": ":UTC",
            **DUMMY_CREDENTIALS,
        }
        plumbing = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        return {**host, **lambda_defined, **config.variables, **plumbing}

    def _load(self) -> Callable[[Any, Any], Any]:
        module_name, _, attribute = self.config.handler.rpartition(".")
        module = importlib.import_module(module_name)
        handler = getattr(module, attribute, None)
        if not callable(handler):
            raise TemplateError(
                f"{self.config.logical_id}: {module_name}.{attribute} is not a function "
                f"(module {module.__file__})"
            )
        return handler  # type: ignore[no-any-return]

    def invoke(self, event: Any) -> Invocation:
        """Run the handler once on ``event``; never raises for the handler's own errors."""
        request_id = str(uuid.uuid4())
        with self._counter_lock:
            self._in_flight += 1
            self.invocations += 1
        try:
            return self._invoke(event, request_id)
        finally:
            with self._counter_lock:
                self._in_flight -= 1

    def _invoke(self, event: Any, request_id: str) -> Invocation:
        result = Invocation(request_id=request_id)
        with self.sandbox.enter(self, self.environment()):
            started = time.monotonic()
            context = LambdaContext(self.config, request_id, started + self.config.timeout)
            try:
                if self._handler is None:
                    result.cold_start = True
                    self._handler = self._load()
                result.response = self._handler(event, context)
                json.dumps(result.response)  # the runtime serializes the response: Runtime.MarshalError
            except Exception as error:  # noqa: BLE001 - the runtime reports any handler error
                result.error = error
                print(f"[ERROR] {type(error).__name__}: {error}", file=sys.stderr)
                traceback.print_exc(file=sys.stderr)
            result.duration = time.monotonic() - started
            if result.error is None and result.duration > self.config.timeout:
                result.error = FunctionTimeout(f"Task timed out after {self.config.timeout:.2f} seconds")
                print(f"{request_id} {result.error}", file=sys.stderr)
        if result.error is not None:
            with self._counter_lock:
                self.errors += 1
            log.warning(
                "%s failed (%s) after %.0f ms",
                self.config.logical_id,
                result.error_type,
                result.duration * 1000,
            )
        else:
            log.debug("%s ok in %.0f ms", self.config.logical_id, result.duration * 1000)
        return result
