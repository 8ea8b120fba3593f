"""One loopback endpoint for every service: moto's WSGI application and the HealthImaging emulator.

A request signed for ``medical-imaging`` (the service in its SigV4 credential scope), or addressed to
the emulator's tooling paths (``/_emulator/…``), goes to :meth:`emulator.server.Emulator.handle`;
everything else goes to moto's :class:`~moto.moto_server.werkzeug_app.DomainDispatcherApplication`,
the application ``ThreadedMotoServer`` serves, which picks the service the same way.  Both run
in-process behind one threaded werkzeug server, so ``AWS_ENDPOINT_URL=http://127.0.0.1:4566`` is all a
client needs.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import quote

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from emulator.server import Emulator

__all__ = ["Endpoint", "signing_service"]

log = logging.getLogger(__name__)

_CREDENTIAL_SCOPE: Final = re.compile(r"Credential=[^/,\s]+/\d{8}/[a-z0-9-]+/([a-z0-9-]+)/aws4_request")
_EMULATOR_SERVICE: Final = "medical-imaging"

StartResponse = Callable[..., Any]


def signing_service(authorization: str) -> str | None:
    """The service a SigV4 ``Authorization`` header was signed for (``s3``, ``medical-imaging``, …)."""
    match = _CREDENTIAL_SCOPE.search(authorization)
    return match.group(1) if match else None


class _RequestHandler(MotoRequestHandler):
    """moto's request handler, quiet (access log at debug level) and without Nagle's delay."""

    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s %s", self.command, self.path, code)


class Endpoint:
    """The single HTTP server; ``port=0`` picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4566, emulator: Emulator | None = None) -> None:
        self.emulator = emulator
        self.moto = DomainDispatcherApplication(create_backend_app)
        self._server: BaseWSGIServer = make_server(
            host, port, self, threaded=True, request_handler=_RequestHandler
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Endpoint:
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-endpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------ WSGI
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        service = signing_service(str(environ.get("HTTP_AUTHORIZATION", "")))
        if service == _EMULATOR_SERVICE or path.startswith("/_emulator/"):
            return self._emulator(environ, start_response)
        return self.moto(environ, start_response)  # type: ignore[no-any-return]

    def _emulator(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ["REQUEST_METHOD"])
        if self.emulator is None:
            start_response("503 Service Unavailable", [("Content-Type", "application/json")])
            return [b'{"message":"HealthImaging is not running yet"}']
        response = self.emulator.handle(method, _target(environ), _headers(environ), _body(environ))
        length = response.content_length if response.stream is not None else len(response.body)
        headers = [
            *response.headers.items(),
            ("Content-Length", str(length)),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ]
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        if method == "HEAD":
            return []
        if response.stream is not None:
            return response.stream
        return [response.body]


def _target(environ: dict[str, Any]) -> str:
    """The request target as sent (still percent-encoded), which the emulator's router expects."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    query = environ.get("QUERY_STRING")
    path = quote(str(environ.get("PATH_INFO", "")).encode("latin-1"), safe="/")
    return f"{path}?{query}" if query else path


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").title(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        if environ.get(key):
            headers[name] = str(environ[key])
    return headers


def _body(environ: dict[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return bytes(stream.read(int(length)))
    if environ.get("wsgi.input_terminated"):
        return bytes(stream.read())
    return b""
