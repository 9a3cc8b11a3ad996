"""The KServe v2 HTTP routes (plus Triton's configuration, statistics and repository extensions, and /metrics).

Thin by design: parse the path and body, call the inference facade, render the answer. Errors are typed
exceptions; `twinfer.http.errors` maps them to status codes and the connection renders `{"error": "..."}`.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import orjson
from twisted.internet.defer import Deferred

from twinfer.errors import InvalidInput, ModelNotReady
from twinfer.http.connection import HttpRequest, HttpResponse
from twinfer.http.errors import Forbidden, MethodNotAllowed, NotFoundRoute
from twinfer.http.infer_codec import HEADER_LENGTH, encode_infer, parse_infer
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.repository import valid_model_name
from twinfer.kserve import messages
from twinfer.kserve.json_proto import to_json_dict

_MODEL = re.compile(
    r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/(?P<action>ready|infer|config|stats))?/?$"
)
_REPO_MODEL = re.compile(r"^/v2/repository/models/(?P<model>[^/]+)/(?P<action>load|unload)/?$")

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
    if not raw.isdigit():
        raise InvalidInput(f"invalid model version {unquote(raw)!r}: versions are positive integers")
    return raw


class KServeHttpApi:
    def __init__(self, facade: InferenceFacade, admin_token: str = "",
                 metrics: Callable[[], tuple[bytes, bytes]] | None = None) -> None:
        self.facade = facade
        self._admin_token = admin_token.encode()
        self._metrics = MetricsOnly(metrics) if metrics is not None else None

    def __call__(self, request: HttpRequest) -> HttpResponse | Deferred[HttpResponse]:
        path, method = request.path, request.method
        match = _MODEL.match(path)
        if match:
            return self._model_route(request, match)
        if path in ("/v2/health/live", "/v2/health/ready"):
            self._require(method, "GET", "HEAD")
            ok = path.endswith("live") or self.facade.ready()
            return HttpResponse(200 if ok else 503, b"")
        if path in ("/v2", "/v2/"):
            self._require(method, "GET")
            return json_response(to_json_dict(messages.server_metadata()))
        if path == "/v2/models/stats":
            self._require(method, "GET")
            return self._stats(None, None)
        if path == "/v2/repository/index":
            self._require(method, "POST")
            ready_only = bool(self._json_body(request).get("ready", False))
            index = messages.repository_index(self.facade.models(), ready_only)
            return json_response(to_json_dict(index).get("models", []))
        match = _REPO_MODEL.match(path)
        if match:
            self._require(method, "POST")
            self._check_admin(request)
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
        parsed = parse_infer(name, version, request.body, request.headers.get(HEADER_LENGTH),
                             self.facade.element_budget())

        def render(result) -> HttpResponse:
            body, header_length = encode_infer(parsed, result)
            if header_length is None:
                return HttpResponse(200, body)
            return HttpResponse(200, body, b"application/octet-stream",
                                [(b"Inference-Header-Content-Length", str(header_length).encode())])

        return self.facade.infer(parsed.request).addCallback(render)

    def _stats(self, name: str | None, version: str | None) -> HttpResponse:
        stats = [to_json_dict(messages.model_statistics(v)) for v in self.facade.versions_for_statistics(name, version)]
        return json_response({"model_stats": stats})

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
            body = json.loads(request.body)
        except ValueError as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        return body

    def _check_admin(self, request: HttpRequest) -> None:
        if not self._admin_token:
            return
        given = request.headers.get(b"authorization", b"")
        if not hmac.compare_digest(given, b"Bearer " + self._admin_token):
            raise Forbidden("repository load/unload needs the admin token (Authorization: Bearer ...)")


class MetricsOnly:
    """The metrics port (like Triton's 8002): `/metrics` and nothing else."""

    def __init__(self, metrics: Callable[[], tuple[bytes, bytes]]) -> None:
        self._metrics = metrics

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path != "/metrics":
            raise NotFoundRoute(f"no endpoint {request.method} {request.path} (this port serves /metrics)")
        KServeHttpApi._require(request.method, "GET")
        body, content_type = self._metrics()
        return HttpResponse(200, body, content_type)
