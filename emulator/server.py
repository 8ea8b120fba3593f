"""The HTTP front of the emulator: a threaded server speaking HealthImaging's REST-JSON protocol.

``Emulator`` wires the parts together (store, scheduler, backend, protocol, request gate) and runs the
server in-process, which is what tests use (``port=0`` picks a free port)::

    with Emulator(EmulatorConfig()) as emulator:
        client = boto3.client("medical-imaging", endpoint_url=emulator.endpoint_url, ...)

Besides the API, two paths serve tooling: ``GET /_emulator/health`` and ``POST /_emulator/reset``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from botocore import xform_name

from emulator.backend import Backend, RequestContext
from emulator.config import EmulatorConfig
from emulator.exceptions import InternalServerException, ServiceError
from emulator.protocol import HttpResponse, Protocol
from emulator.scheduler import Scheduler
from emulator.store import Store
from emulator.throttle import RequestGate

log = logging.getLogger(__name__)

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")


class Emulator:
    """One running emulator: state, background work and the HTTP server."""

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.store = Store(config.data_dir)
        self.scheduler = Scheduler(config.import_workers)
        self.backend = Backend(config, self.store, self.scheduler)
        self.protocol = Protocol()
        self.gate = RequestGate(
            throttling=config.throttling,
            time_scale=config.time_scale,
            fault_rates=config.fault_rates,
            seed=config.fault_seed,
        )
        self._server = _Server((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Emulator:
        """Recover in-flight work, then serve on a background thread."""
        self.backend.recover()
        self._thread = threading.Thread(target=self._server.serve_forever, name="emulator-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on the calling thread (the command line)."""
        self.backend.recover()
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.scheduler.shutdown()
        self.backend.close()
        self.store.close()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait for background work (imports, transitions) and queued events; True when all done."""
        idle = self.scheduler.idle(timeout)
        self.backend.flush_events()
        return idle

    def reset(self) -> None:
        """Forget all state (between tests), throttle buckets included."""
        self.scheduler.idle(30)
        self.store.reset()
        self.gate.reset()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ dispatch
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> HttpResponse:
        split = urlsplit(target)
        if split.path.startswith("/_emulator/"):
            return self._tooling(method, split.path)
        try:
            operation, labels = self.protocol.route(method, split.path)
            self.gate.admit(operation.name)
            query = parse_qs(split.query, keep_blank_values=True)
            params = self.protocol.parse_request(operation, labels, query, headers, body)
            action = getattr(self.backend, xform_name(operation.name))
            output = action(self._context(headers), **params)
            return self.protocol.serialize_response(operation, output)
        except ServiceError as error:
            return self.protocol.serialize_error(error)
        except Exception:
            log.exception("unhandled error in %s %s", method, split.path)
            return self.protocol.serialize_error(InternalServerException("Internal server error"))

    def _context(self, headers: dict[str, str]) -> RequestContext:
        authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        match = _CREDENTIAL_SCOPE.search(authorization)
        return RequestContext(
            account=self.config.account_id, region=match.group(1) if match else self.config.region
        )

    def _tooling(self, method: str, path: str) -> HttpResponse:
        if path == "/_emulator/health" and method == "GET":
            body = {"status": "running", "service": "medical-imaging"}
        elif path == "/_emulator/reset" and method == "POST":
            self.reset()
            body = {"status": "reset"}
        else:
            return HttpResponse(
                status=404, headers={"Content-Type": "application/json"}, body=b'{"message":"Not Found"}'
            )
        return HttpResponse(
            status=200, headers={"Content-Type": "application/json"}, body=json.dumps(body).encode()
        )


class _Server(ThreadingHTTPServer):
    """The HTTP server; a client that hangs up (e.g. after reading the prefix of a frame) is no error."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.debug("client %s closed the connection", client_address)
            return
        super().handle_error(request, client_address)


def _handler_for(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes
        server_version = "HealthImagingEmulator"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {key: value for key, value in self.headers.items()}
            response = emulator.handle(self.command, self.path, headers, body)
            self._write(response)

        def _write(self, response: HttpResponse) -> None:
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            length = response.content_length if response.stream is not None else len(response.body)
            self.send_header("Content-Length", str(length))
            self.send_header("x-amzn-RequestId", _request_id())
            self.end_headers()
            if self.command == "HEAD":
                return
            try:
                if response.stream is not None:
                    for chunk in response.stream:
                        self.wfile.write(chunk)
                else:
                    self.wfile.write(response.body)
            except (BrokenPipeError, ConnectionResetError):
                # The client stopped reading early (allowed for streamed frames).
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve  # noqa: N815 - http.server's naming

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def _request_id() -> str:
    return str(uuid.uuid4())
