"""The whole template running on this machine: :class:`LocalStack`.

::

    with LocalStack("template.yaml", port=0, parameters={"BatchWindow": "1"}) as stack:
        s3 = stack.client("s3")
        s3.put_object(Bucket=stack.outputs["LandingBucketName"], Key="incoming/a.dcm", Body=data)
        stack.wait_idle()

Starting a stack: one endpoint (:mod:`local.endpoint`) serves moto and the HealthImaging emulator; the
template is loaded, its parameters, conditions and ``Globals`` applied and its serverless events
expanded (:mod:`local.sam`); resources are created in dependency order by :mod:`local.providers`;
each function becomes a :class:`~local.functions.LocalFunction`; and the event sources start
(:mod:`local.event_sources`).  Stopping deletes what was created (like ``sam delete``), so another
stack can start in the same process afterwards.

Process-wide, hence one running stack per process: moto's state, the function sandbox (environment
variables, ``sys.path``, modules) and, while the stack runs, dummy AWS credentials in ``os.environ``
(so nothing in the process can reach real AWS by accident); the previous values come back at stop.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TextIO

import boto3
from botocore.config import Config
from moto.events.models import EventPattern

from emulator.config import EmulatorConfig
from emulator.server import Emulator
from emulator.throttle import parse_fault_spec
from local import moto_patches
from local.endpoint import Endpoint
from local.event_sources import (
    AsyncEventSource,
    AsyncTarget,
    DeliveryLog,
    EventSource,
    ScheduledTarget,
    ScheduleSource,
    SqsEventSource,
    VirtualClock,
)
from local.functions import DUMMY_CREDENTIALS, FunctionConfig, Invocation, LocalFunction, Sandbox
from local.intrinsics import PseudoParameters, Resolver, creation_order, references, resolve_parameters
from local.providers import (
    NO_LOCAL_MEANING,
    PROVIDERS,
    Resource,
    create_queue,
    skipped_resource,
)
from local.sam import apply_globals, expand_events, implicit_resources
from local.schedule import parse_schedule
from local.template import Template, TemplateError, load_template

__all__ = ["LocalStack", "StackError", "default_stack_name"]

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 4566
DEFAULT_STACK_NAME: Final = "ahi-local"
_HOST_VARIABLES_REMOVED: Final = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_EVENTS",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_MEDICAL_IMAGING",
    "AWS_ENDPOINT_URL_DYNAMODB",
)
_running_lock = threading.Lock()
_running: list[LocalStack] = []


class StackError(RuntimeError):
    """The stack could not start (the message names the resource and the cause)."""


def default_stack_name(template: Path) -> str:
    """``stack_name`` of samconfig.toml's default environment next to the template, else ``ahi-local``."""
    config = template.parent / "samconfig.toml"
    try:
        default = tomllib.loads(config.read_text(encoding="utf-8")).get("default", {})
    except (OSError, tomllib.TOMLDecodeError):
        return DEFAULT_STACK_NAME
    for command in ("deploy", "global"):
        name = ((default.get(command) or {}).get("parameters") or {}).get("stack_name")
        if isinstance(name, str) and name:
            return name
    return DEFAULT_STACK_NAME


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


class LocalStack:
    """A template's resources in moto and the emulator, its functions and event sources in-process.

    Parameters
    ----------
    template
        The SAM / CloudFormation template.
    stack_name
        Prefix of generated names (default: samconfig.toml's, else ``ahi-local``).
    parameters
        Parameter overrides (strings or values), checked against the template's declarations.
    port
        The endpoint's port on ``host`` (0 picks a free one).
    data_dir
        Where the emulator keeps its state for this run (emptied at start: moto's state lives in
        memory, so older emulator state would not match it); a temporary folder when None.
    throttling, time_scale, faults, fault_seed
        The emulator's throttling (off by default) and fault injection.  ``time_scale`` also speeds
        up schedules and asynchronous retry delays.
    function_log
        A file (path or stream) receiving the functions' stdout/stderr; None leaves them on the console.
    outputs_file
        Where to write the stack's outputs as JSON once started.
    """

    def __init__(
        self,
        template: str | Path = "template.yaml",
        *,
        stack_name: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        data_dir: str | Path | None = None,
        throttling: bool = False,
        time_scale: float = 1.0,
        faults: str = "",
        fault_seed: int | None = None,
        transition_delay: float = 0.05,
        import_workers: int = 1,
        function_log: str | Path | TextIO | None = None,
        outputs_file: str | Path | None = None,
    ) -> None:
        self.template_path = Path(template)
        self.stack_name = stack_name or default_stack_name(self.template_path)
        self.parameter_overrides = dict(parameters or {})
        self.host = host
        self.port = port
        self.region = region
        self.account_id = account_id
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.throttling = throttling
        self.time_scale = time_scale
        self.faults = faults
        self.fault_seed = fault_seed
        self.transition_delay = transition_delay
        self.import_workers = import_workers
        self.function_log = function_log
        self.outputs_file = Path(outputs_file) if outputs_file is not None else None

        self.template: Template | None = None
        self.parameters: dict[str, Any] = {}
        self.conditions: dict[str, bool] = {}
        self.resources: dict[str, Resource] = {}
        self.outputs: dict[str, str] = {}
        self.functions: dict[str, LocalFunction] = {}
        self.deliveries = DeliveryLog()
        self.sources: list[EventSource] = []
        self.endpoint: Endpoint | None = None
        self.emulator: Emulator | None = None
        self.base_dir = self.template_path.resolve().parent

        self._created: list[Resource] = []
        self._consumed_queues: dict[str, str] = {}
        self._async_targets: list[tuple[LocalFunction, AsyncTarget]] = []
        self._async_settings: dict[str, dict[str, Any]] = {}
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._saved_environ: dict[str, str | None] = {}
        self._temp_dir: Path | None = None
        self._log_handle: TextIO | None = None
        self._sandbox: Sandbox | None = None
        self._clock = VirtualClock(time_scale)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        if self.endpoint is None:
            raise RuntimeError("the stack is not started")
        return self.endpoint.url

    def start(self) -> LocalStack:
        """Start the endpoint, create every resource, start the event sources."""
        with _running_lock:
            if _running:
                raise StackError("a LocalStack is already running in this process (moto's state is global)")
            _running.append(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        # What the template says, resolved as far as it can be without resources (errors come early)
        template = self.template = load_template(self.template_path)
        self.parameters = resolve_parameters(template.parameters, self.parameter_overrides)
        resolver = Resolver(
            self.parameters,
            pseudo=PseudoParameters(
                stack_name=self.stack_name, region=self.region, account_id=self.account_id
            ),
            conditions=template.conditions,
            mappings=template.mappings,
            lookup=self._lookup,
        )
        self.conditions = resolver.conditions()
        declared = implicit_resources(expand_events(apply_globals(template.resources, template.globals)))
        active = {
            logical_id: resource
            for logical_id, resource in declared.items()
            if "Condition" not in resource or resolver.condition(str(resource["Condition"]))
        }
        dependencies = {
            logical_id: references(resource.get("Properties") or {}, resolver, active)
            | _depends_on(logical_id, resource, active)
            for logical_id, resource in active.items()
        }
        order = creation_order(dependencies)
        # The services, then the resources in dependency order, then the event sources
        self._prepare_process()
        self.endpoint = Endpoint(self.host, self.port).start()
        self.emulator = Emulator(self._emulator_config()).start()
        self.endpoint.emulator = self.emulator
        self._session = boto3.session.Session(
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
            region_name=self.region,
        )
        self._sandbox = Sandbox([], self._open_function_log())
        for logical_id in order:
            self._create(logical_id, active[logical_id], resolver)
        for name, output in template.outputs.items():
            if "Condition" in output and not resolver.condition(str(output["Condition"])):
                continue
            self.outputs[name] = _text(resolver.resolve(output.get("Value"), f"Outputs.{name}"))
        self._start_sources()
        if self.outputs_file is not None:
            self.outputs_file.parent.mkdir(parents=True, exist_ok=True)
            self.outputs_file.write_text(json.dumps(self.outputs, indent=2) + "\n", encoding="utf-8")
        log.info(
            "stack %s: %d resources, %d function(s), endpoint %s",
            self.stack_name,
            len(self.resources),
            len(self.functions),
            self.endpoint_url,
        )

    def stop(self) -> None:
        """Stop the event sources, delete the resources, stop the servers, restore the process."""
        for source in self.sources:
            source.stop()
        for source in self.sources:
            source.join(timeout=5)
        self.sources.clear()
        if self.emulator is not None:
            self.emulator.stop()  # first: it may be reading the buckets deleted below
            self.emulator = None
        if self.endpoint is not None:
            self.endpoint.emulator = None
            for resource in reversed(self._created):
                provider = PROVIDERS.get(resource.type)
                if provider is not None and not resource.skipped:
                    try:
                        provider.delete(self, resource)
                    except Exception:  # cleanup is best effort
                        log.debug("could not delete %s", resource.logical_id, exc_info=True)
        self._created.clear()
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
        self._restore_process()
        with _running_lock:
            if self in _running:
                _running.remove(self)

    def _prepare_process(self) -> None:
        moto_patches.install()
        changes: dict[str, str | None] = {
            **DUMMY_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            **dict.fromkeys(_HOST_VARIABLES_REMOVED),
        }
        for key, value in changes.items():
            self._saved_environ[key] = os.environ.get(key)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def _restore_process(self) -> None:
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environ.clear()

    def _emulator_config(self) -> EmulatorConfig:
        if self.data_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="ahi-local-"))
            emulator_dir = self._temp_dir / "emulator"
        else:
            emulator_dir = self.data_dir / "emulator"
            shutil.rmtree(emulator_dir, ignore_errors=True)
        assert self.endpoint is not None
        return EmulatorConfig(
            data_dir=emulator_dir,
            account_id=self.account_id,
            region=self.region,
            s3_endpoint_url=self.endpoint.url,
            events=True,
            events_endpoint_url=self.endpoint.url,
            throttling=self.throttling,
            time_scale=self.time_scale,
            fault_rates=parse_fault_spec(self.faults) if self.faults else {},
            fault_seed=self.fault_seed,
            transition_delay=self.transition_delay,
            import_workers=self.import_workers,
        )

    def _open_function_log(self) -> TextIO | None:
        if self.function_log is None or not isinstance(self.function_log, str | Path):
            return self.function_log
        path = Path(self.function_log)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = path.open("a", encoding="utf-8", buffering=1)
        return self._log_handle

    # ------------------------------------------------------------------ clients
    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` on the stack's endpoint (thread-safe, cached)."""
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = self.new_client(service)
            return self._clients[service]

    def new_client(self, service: str) -> Any:
        """A fresh client (each poller has its own, so long polls never exhaust a shared pool)."""
        if self._session is None:
            raise RuntimeError("the stack is not started")
        config = Config(
            inject_host_prefix=False,
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=20,
            read_timeout=70,
        )
        return self._session.client(service, endpoint_url=self.endpoint_url, config=config)

    # ------------------------------------------------------------------ resources
    def _lookup(self, logical_id: str, attribute: str | None) -> Any:
        resource = self.resources.get(logical_id)
        if resource is None:
            raise TemplateError(f"{logical_id}: unknown parameter or resource (or not created yet)")
        return resource.physical_id if attribute is None else resource.get_att(attribute)

    def _create(self, logical_id: str, declaration: Mapping[str, Any], resolver: Resolver) -> None:
        resource_type = str(declaration["Type"])
        try:
            properties = resolver.resolve(declaration.get("Properties") or {}, f"Resources.{logical_id}")
            provider = PROVIDERS.get(resource_type)
            if provider is not None:
                resource = provider.create(self, logical_id, properties)
                resource.properties = resource.properties or properties
            elif resource_type in NO_LOCAL_MEANING:
                log.info("%s (%s): no local meaning, recorded and skipped", logical_id, resource_type)
                resource = skipped_resource(self, logical_id, resource_type, properties)
            else:
                raise TemplateError(
                    f"resource type {resource_type} is not supported by the local runtime "
                    f"(supported: {', '.join(sorted(PROVIDERS))})"
                )
            if resource_type == "AWS::Serverless::Function":
                self._add_function(resource, properties)
        except TemplateError as error:
            raise StackError(f"{logical_id} ({resource_type}): {error}") from error
        except Exception as error:
            raise StackError(f"creating {logical_id} ({resource_type}) failed: {error}") from error
        self.resources[logical_id] = resource
        self._created.append(resource)
        log.debug("created %s (%s): %s", logical_id, resource_type, resource.physical_id)

    def _layer_dir(self, arn: str) -> Path | None:
        for resource in self.resources.values():
            if resource.type == "AWS::Serverless::LayerVersion" and resource.physical_id == arn:
                content = (self.base_dir / str(resource.properties["ContentUri"])).resolve()
                if not content.is_dir():
                    raise TemplateError(f"layer {resource.logical_id}: {content} is not a folder")
                build_method = (resource.properties.get("Metadata") or {}).get("BuildMethod")
                if build_method is None and (content / "python").is_dir():
                    return content / "python"
                return content
        return None

    def _add_function(self, resource: Resource, props: Mapping[str, Any]) -> None:
        logical_id = resource.logical_id
        if props.get("PackageType", "Zip") != "Zip" or props.get("InlineCode") is not None:
            raise TemplateError("only Zip functions with a local CodeUri run locally")
        code = props.get("CodeUri")
        if not isinstance(code, str):
            raise TemplateError(f"CodeUri must be a local folder, got {code!r}")
        code_dir = (self.base_dir / code).resolve()
        if not code_dir.is_dir():
            raise TemplateError(f"CodeUri {code_dir} is not a folder")
        runtime = str(props.get("Runtime", "python3.12"))
        if not runtime.startswith("python"):
            raise TemplateError(f"Runtime {runtime}: only Python functions run in-process")
        here = f"python{sys.version_info.major}.{sys.version_info.minor}"
        if runtime != here:
            log.warning("%s declares %s; running it on %s", logical_id, runtime, here)
        layer_dirs: list[Path] = []
        for arn in props.get("Layers", []):
            directory = self._layer_dir(str(arn))
            if directory is None:
                log.info(
                    "%s: layer %s is not in the template; its packages must be installed", logical_id, arn
                )
            else:
                layer_dirs.append(directory)
        variables = {
            str(key): _text(value)
            for key, value in ((props.get("Environment") or {}).get("Variables") or {}).items()
        }
        logging_config = props.get("LoggingConfig") or {}
        if logging_config.get("LogFormat") == "JSON":  # Lambda's advanced logging controls
            variables["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
            variables["AWS_LAMBDA_LOG_LEVEL"] = str(logging_config.get("ApplicationLogLevel", "INFO"))
        reserved = props.get("ReservedConcurrentExecutions")
        config = FunctionConfig(
            logical_id=logical_id,
            name=resource.physical_id,
            arn=str(resource.attributes["Arn"]),
            code_dir=code_dir,
            handler=str(props.get("Handler", "")),
            layer_dirs=tuple(layer_dirs),
            variables=variables,
            timeout=float(props.get("Timeout", 3)),
            memory_size=int(props.get("MemorySize", 128)),
            runtime=runtime,
            reserved_concurrency=None if reserved is None else int(reserved),
            region=self.region,
        )
        assert self._sandbox is not None
        self._sandbox.add_roots([code_dir, *layer_dirs])
        self.functions[logical_id] = LocalFunction(config, self._sandbox, self.endpoint_url)
        invoke_config = props.get("EventInvokeConfig") or {}
        on_failure = ((invoke_config.get("DestinationConfig") or {}).get("OnFailure") or {}).get(
            "Destination"
        )
        dead_letter = (props.get("DeadLetterQueue") or {}).get("TargetArn")
        self._async_settings[logical_id] = {
            "maximum_retry_attempts": int(invoke_config.get("MaximumRetryAttempts", 2)),
            "maximum_event_age": float(invoke_config.get("MaximumEventAgeInSeconds", 21600)),
            "failure_arn": on_failure or dead_letter,
        }

    def _function_by_arn(self, arn: str) -> LocalFunction | None:
        return next((f for f in self.functions.values() if arn in (f.config.arn, f.config.name)), None)

    def event_target(self, rule_id: str, target: dict[str, Any]) -> dict[str, Any]:
        """An EventBridge target as put in moto: a local function's becomes a delivery queue."""
        function = self._function_by_arn(str(target["Arn"]))
        if function is None:
            return target
        existing = sum(1 for resource_id in self.resources if resource_id.startswith(f"{rule_id}Delivery"))
        queue_id = f"{rule_id}Delivery{existing + 1 if existing else ''}"
        visibility = math.ceil(function.config.timeout) + 5
        queue = create_queue(self, queue_id, {"VisibilityTimeout": visibility})
        self.resources[queue_id] = queue
        self._created.append(queue)
        self._async_targets.append(
            (
                function,
                AsyncTarget(
                    queue_url=queue.physical_id,
                    queue_arn=str(queue.attributes["Arn"]),
                    input=target.get("Input"),
                    input_path=target.get("InputPath"),
                ),
            )
        )
        local = {key: value for key, value in target.items() if key not in ("Input", "InputPath")}
        return local | {"Arn": queue.attributes["Arn"]}

    def _queue_url(self, arn: str) -> str:
        name = arn.rsplit(":", 1)[-1]
        for resource in self.resources.values():
            if resource.type == "AWS::SQS::Queue" and resource.attributes.get("Arn") == arn:
                return resource.physical_id
        return str(self.client("sqs").get_queue_url(QueueName=name)["QueueUrl"])

    # ------------------------------------------------------------------ event sources
    def _start_sources(self) -> None:
        self._clock = VirtualClock(self.time_scale)  # schedules count from now
        for resource in self.resources.values():
            if resource.type == "AWS::Lambda::EventSourceMapping":
                self._add_sqs_source(resource)
        for function, target in self._async_targets:
            if function.config.reserved_concurrency == 0:
                log.warning(
                    "%s has ReservedConcurrentExecutions 0: never invoked", function.config.logical_id
                )
                continue
            settings = self._async_settings[function.config.logical_id]
            failure_arn = settings["failure_arn"]
            if failure_arn and not str(failure_arn).startswith("arn:aws:sqs:"):
                log.warning(
                    "%s: only SQS failure destinations are local; %s ignored",
                    function.config.logical_id,
                    failure_arn,
                )
                failure_arn = None
            self.sources.append(
                AsyncEventSource(
                    function,
                    target,
                    sqs=self.new_client("sqs"),
                    deliveries=self.deliveries,
                    time_scale=self.time_scale,
                    maximum_retry_attempts=settings["maximum_retry_attempts"],
                    maximum_event_age=settings["maximum_event_age"],
                    on_failure_queue_url=self._queue_url(failure_arn) if failure_arn else None,
                )
            )
            self._consumed_queues[target.queue_url] = target.queue_arn
        for resource in self.resources.values():
            if resource.type == "AWS::Events::Rule" and "ScheduleExpression" in resource.properties:
                self._add_schedule(resource)
        for source in self.sources:
            source.start()

    def _add_sqs_source(self, mapping: Resource) -> None:
        props = mapping.properties
        function = self._function_by_arn(str(props["FunctionName"]))
        if function is None:
            raise StackError(f"{mapping.logical_id}: function {props['FunctionName']} is not in the template")
        if props.get("Enabled", True) in (False, "false"):
            log.info("%s is disabled", mapping.logical_id)
            return
        if function.config.reserved_concurrency == 0:
            log.warning("%s has ReservedConcurrentExecutions 0: never invoked", function.config.logical_id)
            return
        filters = [
            EventPattern.load(_pattern_text(item["Pattern"]))
            for item in (props.get("FilterCriteria") or {}).get("Filters", [])
        ]
        queue_arn = str(props["EventSourceArn"])
        queue_url = self._queue_url(queue_arn)
        self.sources.append(
            SqsEventSource(
                function,
                sqs=self.new_client("sqs"),
                queue_url=queue_url,
                queue_arn=queue_arn,
                batch_size=int(props.get("BatchSize", 10)),
                batching_window=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                report_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
                filters=filters,
                deliveries=self.deliveries,
                name=f"{mapping.logical_id}",
            )
        )
        self._consumed_queues[queue_url] = queue_arn

    def _add_schedule(self, rule: Resource) -> None:
        props = rule.properties
        if props.get("State", "ENABLED") != "ENABLED":
            return
        shims = {target.queue_arn for _, target in self._async_targets}
        targets: list[ScheduledTarget] = []
        for target in props.get("Targets", []):
            arn = str(target["Arn"])
            if not arn.startswith("arn:aws:sqs:"):
                log.warning("%s: schedule target %s is not delivered locally", rule.logical_id, arn)
                continue
            raw = arn in shims  # the function's delivery source applies Input/InputPath itself
            targets.append(
                ScheduledTarget(
                    queue_url=self._queue_url(arn),
                    input=None if raw else target.get("Input"),
                    input_path=None if raw else target.get("InputPath"),
                )
            )
        self.sources.append(
            ScheduleSource(
                rule_arn=str(rule.attributes["Arn"]),
                schedule=parse_schedule(str(props["ScheduleExpression"])),
                targets=targets,
                sqs=self.new_client("sqs"),
                account_id=self.account_id,
                region=self.region,
                clock=self._clock,
            )
        )

    # ------------------------------------------------------------------ use
    def invoke(self, function: str, event: Any) -> Invocation:
        """Invoke a function synchronously by logical id (``RequestResponse``)."""
        try:
            return self.functions[function].invoke(event)
        except KeyError:
            raise KeyError(f"no function {function}; known: {', '.join(self.functions)}") from None

    def set_queue_attributes(
        self, queue_url: str, attributes: Mapping[str, str], timeout: float = 30.0
    ) -> None:
        """Change a queue's attributes, and return once every poller of it has seen the change.

        A receive reads the queue's ``VisibilityTimeout`` when it starts, so a long poll already
        waiting still applies the old one; this waits for each poller's next receive to begin.
        """
        self.client("sqs").set_queue_attributes(QueueUrl=queue_url, Attributes=dict(attributes))
        changed = time.monotonic()
        pollers = [s for s in self.sources if isinstance(s, SqsEventSource) and s.queue_url == queue_url]
        deadline = changed + timeout
        while any(poller.receive_started <= changed for poller in pollers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the pollers of {queue_url.rsplit('/', 1)[-1]} did not poll again")
            time.sleep(0.02)

    def busy(self) -> str | None:
        """Why the stack is not idle, or None: invocations, the emulator, consumed queues, pollers."""
        for function in self.functions.values():
            if function.in_flight:
                return f"{function.config.logical_id} is running"
        if self.emulator is not None:
            if not self.emulator.scheduler.idle(0):
                return "HealthImaging is working"
            self.emulator.backend.flush_events()
        sqs = self.client("sqs")
        for url in self._consumed_queues:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            if any(int(value) for value in attributes.values()):
                return f"queue {url.rsplit('/', 1)[-1]} has messages"
        for source in self.sources:
            if source.busy:
                return f"{source.name} is delivering"
        return None

    def wait_idle(
        self,
        timeout: float = 300.0,
        *,
        settle: float = 0.3,
        progress: Callable[[str | None], None] | None = None,
    ) -> None:
        """Block until nothing is left to do (checked twice, ``settle`` seconds apart)."""
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while True:
            reason = self.busy()
            if progress is not None:
                progress(reason)
            now = time.monotonic()
            if reason is None:
                quiet_since = quiet_since or now
                if now - quiet_since >= settle:
                    return
            else:
                quiet_since = None
            if now > deadline:
                raise TimeoutError(f"the stack is not idle after {timeout:.0f} s: {reason}")
            time.sleep(0.05)

    def resource(self, logical_id: str) -> Resource:
        return self.resources[logical_id]


def _depends_on(logical_id: str, resource: Mapping[str, Any], active: Mapping[str, Any]) -> set[str]:
    depends = resource.get("DependsOn") or []
    names = {depends} if isinstance(depends, str) else set(depends)
    missing = sorted(names - set(active))
    if missing:
        raise TemplateError(f"{logical_id} DependsOn {', '.join(missing)}, which is not in the stack")
    return names


def _pattern_text(pattern: Any) -> str:
    return pattern if isinstance(pattern, str) else json.dumps(pattern)
