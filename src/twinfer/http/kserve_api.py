"""The KServe v2 HTTP routes (plus Triton's configuration, statistics and repository extensions, and /metrics).

Thin by design: parse the path and body, call the inference facade, render the answer. Errors are typed
exceptions; `twinfer.http.errors` maps them to status codes and the connection renders `{"error": "..."}`.

Who may call what (the same policy as the game protocol and gRPC, DESIGN §3) is decided in `check_head`, which the
connection runs once the headers are in and before any body byte is buffered: the health endpoints are open for
probes, repository load/unload need the admin token (and are refused when none is configured), everything else
needs `Authorization: Bearer <token>` when the server has a token secret.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import orjson
from twisted.internet.defer import Deferred

from twinfer.errors import InvalidInput, ModelNotReady
from twinfer.http.connection import HttpRequest, HttpResponse
from twinfer.http.errors import MethodNotAllowed, NotFoundRoute, PayloadTooLarge
from twinfer.http.infer_codec import HEADER_LENGTH, ParsedInfer, encode_infer
from twinfer.http.json_offload import InlineDecoder, json_part_size
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.types import InferenceResult
from twinfer.inference.repository import valid_model_name
from twinfer.kserve import messages
from twinfer.kserve.json_proto import to_json_dict
from twinfer.kserve.statistics import StatisticsReader
from twinfer.security.tokens import AdminCheck, Authenticator

# Matched with fullmatch: `$` alone also matches before a final newline (`/v2/models/tiny%0a` decoded).
_MODEL = re.compile(
    r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/(?P<action>ready|infer|config|stats))?/?"
)
_REPO_MODEL = re.compile(r"/v2/repository/models/(?P<model>[^/]+)/(?P<action>load|unload)/?")
_OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
_STATS_PATHS = frozenset({"/v2/models/stats", "/v2/models/stats/"})
DEFAULT_MAX_JSON_BODY_BYTES = 8 * 1024 * 1024

EMPTY_OK = HttpResponse(200, b"")


def json_response(document: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(document))


def model_name_from(raw: str) -> str:
    name = unquote(raw)
    if not valid_model_name(name):
        raise InvalidInput(f"invalid model name {name!r}")
    return name


def version_from(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput(f"invalid model version {unquote(raw)!r}: versions are positive integers")
    return raw


class KServeHttpApi:
    def __init__(self, facade: InferenceFacade, admin_token: str = "",
                 metrics: Callable[[], Any] | None = None, *, auth: Authenticator | None = None,
                 max_json_body_bytes: int = DEFAULT_MAX_JSON_BODY_BYTES, decoder: Any = None,
                 now: Callable[[], float] = time.time, statistics: StatisticsReader | None = None) -> None:
        """`auth` is the server's Authenticator (the game protocol's); None or one without a secret checks nothing.
        `decoder.parse(model, version, body_chunks, header_length)` parses infer bodies (ParsedInfer or a Deferred of
        one): `json_offload.ProcessDecoder` in the server, parsing inline by default."""
        self.facade = facade
        self._admin = AdminCheck(admin_token)
        self._auth = auth if auth is not None and auth.required else None
        self._max_json = max_json_body_bytes
        self._decoder = decoder if decoder is not None else InlineDecoder()
        self._now = now
        self._metrics = MetricsOnly(metrics) if metrics is not None else None
        self._statistics = statistics if statistics is not None else StatisticsReader(facade)

    def check_head(self, request: HttpRequest) -> None:
        """Runs on the headers alone: refuse before a body is buffered for a caller who may not send it."""
        path = request.path
        if path in _OPEN_PATHS:
            return
        authorization = request.headers.get(b"authorization")
        if _REPO_MODEL.fullmatch(path):
            self._admin.check(authorization)
            return
        if self._auth is not None:
            self._auth.authenticate_bearer(authorization, self._now())
        if request.method == "POST" and path.endswith(("/infer", "/infer/")):
            length = request.headers.get(b"content-length")
            header_length = request.headers.get(HEADER_LENGTH)
            declared = header_length if header_length is not None else length
            if declared is not None and declared.isdigit():
                self._check_json_size(int(declared))

    def _check_json_size(self, size: int) -> None:
        if size > self._max_json:
            raise PayloadTooLarge(
                f"JSON part of the request is {size} bytes, above the {self._max_json}-byte limit for JSON; send "
                "large tensors with the binary tensor extension (tritonclient: set_data_from_numpy(..., "
                "binary_data=True))")

    def __call__(self, request: HttpRequest) -> HttpResponse | Deferred[HttpResponse]:
        path, method = request.path, request.method
        if path in _STATS_PATHS:  # before the model route, which would take `stats` for a model name
            self._require(method, "GET")
            return self._stats(None, None)
        match = _MODEL.fullmatch(path)
        if match:
            return self._model_route(request, match)
        if path in _OPEN_PATHS:
            self._require(method, "GET", "HEAD")
            ok = path.endswith("live") or self.facade.ready()
            return HttpResponse(200 if ok else 503, b"")
        if path in ("/v2", "/v2/"):
            self._require(method, "GET")
            return json_response(to_json_dict(messages.server_metadata()))
        if path == "/v2/repository/index":
            self._require(method, "POST")
            ready_only = bool(self._json_body(request).get("ready", False))
            index = messages.repository_index(self.facade.models(), ready_only)
            return json_response(to_json_dict(index).get("models", []))
        match = _REPO_MODEL.fullmatch(path)
        if match:
            self._require(method, "POST")
            self._admin.check(request.headers.get(b"authorization"))  # also in check_head; kept for direct calls
            name = model_name_from(match["model"])
            action = self.facade.load if match["action"] == "load" else self.facade.unload
            return action(name).addCallback(lambda _: EMPTY_OK)
        if path == "/metrics" and self._metrics is not None:
            return self._metrics(request)
        raise NotFoundRoute(f"no endpoint {method} {path}")

    def _model_route(self, request: HttpRequest, match: re.Match[str]) -> HttpResponse | Deferred[HttpResponse]:
        name = model_name_from(match["model"])
        version = version_from(match["version"])
        action = match["action"]
        if action == "infer":
            self._require(request.method, "POST")
            return self._infer(request, name, version)
        self._require(request.method, "GET", "HEAD")
        if action == "ready":
            try:
                self.facade.resolve(name, version)
            except ModelNotReady:
                return HttpResponse(400, b"")
            return HttpResponse(200, b"")
        if action == "stats":
            return self._stats(name, version)
        resolved = self.facade.resolve(name, version)
        if action == "config":
            return json_response(to_json_dict(messages.triton_config(resolved.config)))
        return json_response(messages.model_metadata_json(self.facade.model(name), resolved))

    def _infer(self, request: HttpRequest, name: str, version: str | None) -> Deferred[HttpResponse]:
        header_length = request.headers.get(HEADER_LENGTH)
        self._check_json_size(json_part_size(request.body_size, header_length))  # chunked bodies declared none
        # A body parsed inline (the usual case) goes straight on to the facade: no Deferred for the parse, and no
        # chained Deferred (run returning one inside another's callback costs a _continuation turn per request).
        parsed = self._decoder.parse(name, version, request.body_chunks, header_length,
                                     self.facade.max_request_elements)
        if isinstance(parsed, Deferred):
            return parsed.addCallback(self._run_parsed)
        return self._run_parsed(parsed)

    def _run_parsed(self, parsed: ParsedInfer) -> Deferred[HttpResponse]:
        return self.facade.infer(parsed.request).addCallback(_render_infer, parsed)

    def _stats(self, name: str | None, version: str | None) -> Deferred[HttpResponse]:
        return self._statistics.read(name, version).addCallback(_render_stats)

    # --- checks -------------------------------------------------------------------------------------------------

    @staticmethod
    def _require(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise MethodNotAllowed(f"method {method} not allowed here (use {' or '.join(allowed)})")

    @staticmethod
    def _json_body(request: HttpRequest) -> dict[str, Any]:
        if not request.body.strip():
            return {}
        try:
            body = orjson.loads(request.body)  # depth-limited: deep nesting is a JSONDecodeError, not a RecursionError
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        return body


def _render_infer(result: InferenceResult, parsed: ParsedInfer) -> HttpResponse:
    body, header_length = encode_infer(parsed, result)
    if header_length is None:
        return HttpResponse(200, body)
    return HttpResponse(200, body, b"application/octet-stream",
                        [(b"Inference-Header-Content-Length", str(header_length).encode())])


def _render_stats(stats: list[Any]) -> HttpResponse:
    return json_response({"model_stats": [to_json_dict(s) for s in stats]})


class MetricsOnly:
    """The metrics port (like Triton's 8002): `/metrics` and nothing else."""

    def __init__(self, metrics: Callable[[], tuple[bytes, bytes] | Deferred[tuple[bytes, bytes]]]) -> None:
        self._metrics = metrics

    def __call__(self, request: HttpRequest) -> HttpResponse | Deferred[HttpResponse]:
        if request.path != "/metrics":
            raise NotFoundRoute(f"no endpoint {request.method} {request.path} (this port serves /metrics)")
        KServeHttpApi._require(request.method, "GET")
        page = self._metrics()
        if isinstance(page, Deferred):
            return page.addCallback(lambda p: HttpResponse(200, *p))
        return HttpResponse(200, *page)
