"""`twinfer config-server`: the HTTP API for service-group configs, on the same httptools-based protocol as the
KServe front-end.

    GET  /v1/groups                          {"groups": {name: latest version}}
    GET  /v1/groups/{g}[?version=N&wait=S]   {"group", "version", "settings"} with an ETag; If-None-Match -> 304;
                                             with `wait`, answers when a version newer than N exists (long poll),
                                             or 304 after S seconds
    GET  /v1/groups/{g}/versions             {"versions": [1, 2, ...]}
    GET  /v1/groups/{g}/versions/{n}         one version
    PUT  /v1/groups/{g}                      body {"settings": {...}} (or the mapping itself), needs
                                             `Authorization: Bearer <write token>`; If-Match for optimistic updates;
                                             settings are validated against twinfer's Settings (400 names the key)
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred

from twinfer.configserver.store import ConfigStore, StoreError, StoreFull, StoreReadOnly, valid_group
from twinfer.errors import InvalidInput, ModelNotFound
from twinfer.http.connection import HttpRequest, HttpResponse
from twinfer.http.errors import Forbidden, MethodNotAllowed, NotFoundRoute

_GROUP = re.compile(r"/v1/groups/(?P<group>[^/]+)(?:/versions(?:/(?P<version>[0-9]{1,18}))?(?P<list>/?))?")
MAX_WAIT_S = 60.0
_VERSION = re.compile(r"[0-9]{1,18}")  # ASCII only: "²".isdigit() is True, int("²") raises
_SECONDS = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")  # float() also takes "nan", "inf", "1e9", " 1_0 "
STORE_STATUS = ((StoreFull, 507), (StoreReadOnly, 503), (StoreError, 500))


def query_int(query: dict[str, list[str]], key: str) -> int:
    value = query.get(key, ["0"])[0] or "0"
    if not _VERSION.fullmatch(value):
        raise InvalidInput(f"{key}: {value[:40]!r} is not a version number")
    return int(value)


def query_seconds(query: dict[str, list[str]], key: str) -> float:
    value = query.get(key, ["0"])[0] or "0"
    if not _SECONDS.fullmatch(value):
        raise InvalidInput(f"{key}: {value[:40]!r} is not a number of seconds")
    return float(value)


def check_settings(settings: dict[str, Any]) -> None:
    """A group config is a partial Settings mapping: unknown keys and bad values are refused, naming the key."""
    from pydantic import ValidationError

    from twinfer.config.loading import first_error
    from twinfer.config.settings import Settings

    try:
        Settings.model_validate(settings)
    except ValidationError as exc:
        _, key, message = first_error(exc)
        raise InvalidInput(f"{key}: {message}") from None


def _etag(group: str, version: int) -> bytes:
    return f'"{group}-{version}"'.encode()


class ConfigServerApi:
    def __init__(self, store: ConfigStore, write_token: str, clock: Any) -> None:
        self.store = store
        self._token = write_token.encode()
        self.clock = clock
        self._watchers: dict[str, list[Deferred[None]]] = {}

    def __call__(self, request: HttpRequest) -> HttpResponse | Deferred[HttpResponse]:
        if request.path in ("/v1/groups", "/v1/groups/"):
            self._require(request, "GET")
            return self._json({"groups": self.store.groups()})
        if request.path == "/health":
            return HttpResponse(200, b"")
        match = _GROUP.fullmatch(request.path)
        if match is None:
            raise NotFoundRoute(f"no endpoint {request.method} {request.path}")
        group = match["group"]
        if not valid_group(group):
            raise InvalidInput(f"invalid group name {group!r}")
        if match["version"]:
            self._require(request, "GET")
            return self._version(group, int(match["version"]))
        if match["list"] is not None and request.path.rstrip("/").endswith("/versions"):
            self._require(request, "GET")
            return self._json({"versions": self.store.versions(group)})
        if request.method == "PUT":
            return self._put(group, request)
        self._require(request, "GET")
        return self._get(group, request)

    # --- reads --------------------------------------------------------------------------------------------------

    def _version(self, group: str, version: int) -> HttpResponse:
        found = self.store.get(group, version)
        if found is None:
            raise ModelNotFound(f"group {group!r} has no version {version}")
        return self._document(group, *found)

    def _get(self, group: str, request: HttpRequest) -> HttpResponse | Deferred[HttpResponse]:
        query = parse_qs(request.query)
        known = query_int(query, "version")
        wait = min(query_seconds(query, "wait"), MAX_WAIT_S)
        latest = self.store.latest(group)
        if wait > 0 and latest <= known:
            return self._wait(group, known, wait, request)
        return self._current(group, request)

    def _current(self, group: str, request: HttpRequest) -> HttpResponse:
        found = self.store.get(group)
        if found is None:
            raise ModelNotFound(f"no service group {group!r}")
        version, settings = found
        if request.headers.get(b"if-none-match") == _etag(group, version):
            return HttpResponse(304, b"", headers=[(b"ETag", _etag(group, version))])
        return self._document(group, version, settings)

    def _wait(self, group: str, known: int, wait: float, request: HttpRequest) -> Deferred[HttpResponse]:
        d: Deferred[None] = Deferred()
        self._watchers.setdefault(group, []).append(d)
        timer = self.clock.callLater(wait, lambda: d.called or d.callback(None))

        def answer(_: object) -> HttpResponse:
            if timer.active():
                timer.cancel()
            waiting = self._watchers.get(group, [])
            if d in waiting:
                waiting.remove(d)
            if self.store.latest(group) <= known:
                return HttpResponse(304, b"")
            return self._current(group, request)

        return d.addCallback(answer)

    # --- writes -------------------------------------------------------------------------------------------------

    def _put(self, group: str, request: HttpRequest) -> HttpResponse:
        if not self._token or not hmac.compare_digest(request.headers.get(b"authorization", b""),
                                                      b"Bearer " + self._token):
            raise Forbidden("writing a group config needs the write token (Authorization: Bearer ...)")
        if_match = request.headers.get(b"if-match")
        latest = self.store.latest(group)
        if if_match is not None and if_match != _etag(group, latest):
            return HttpResponse(412, json.dumps({"error": f"group {group!r} is at version {latest}"}).encode())
        try:
            body = json.loads(request.body or b"{}")
        except ValueError as exc:
            raise InvalidInput(f"body is not JSON: {exc}") from None
        except RecursionError:
            raise InvalidInput("body is nested too deeply") from None
        settings = body.get("settings", body) if isinstance(body, dict) else None
        if not isinstance(settings, dict):
            raise InvalidInput("body must be a JSON object of settings")
        try:
            check_settings(settings)
        except RecursionError:
            raise InvalidInput("settings are nested too deeply") from None
        try:
            version = self.store.put(group, settings)
        except StoreError as exc:
            status = next(code for cls, code in STORE_STATUS if isinstance(exc, cls))
            return HttpResponse(status, json.dumps({"error": exc.message}).encode())
        for d in self._watchers.pop(group, []):
            if not d.called:
                d.callback(None)
        return HttpResponse(201, json.dumps({"group": group, "version": version}).encode(),
                            headers=[(b"ETag", _etag(group, version))])

    # --- helpers ------------------------------------------------------------------------------------------------

    def _document(self, group: str, version: int, settings: dict[str, Any]) -> HttpResponse:
        body = json.dumps({"group": group, "version": version, "settings": settings}).encode()
        return HttpResponse(200, body, headers=[(b"ETag", _etag(group, version))])

    @staticmethod
    def _json(document: Any) -> HttpResponse:
        return HttpResponse(200, json.dumps(document).encode())

    @staticmethod
    def _require(request: HttpRequest, *methods: str) -> None:
        if request.method not in methods:
            raise MethodNotAllowed(f"method {request.method} not allowed here")


def run_config_server(host: str, port: int, store_dir: Any, write_token: str, ports_file: Any = None) -> int:
    from pathlib import Path

    from twisted.internet import reactor
    from twisted.logger import Logger

    from twinfer.http.connection import HttpFactory
    from twinfer.jsonfile import write_json_atomically
    from twinfer.logs import setup_logging

    setup_logging("text", "info")
    log = Logger()
    api = ConfigServerApi(ConfigStore(Path(store_dir)), write_token, reactor)
    listening = reactor.listenTCP(port, HttpFactory(api, reactor, 1024 * 1024, 300.0), interface=host)
    bound = listening.getHost().port
    if not write_token:
        log.warn("config server: no write token; PUT is refused until one is set (TWINFER_CONFIG_WRITE_TOKEN)")
    log.info("config server on {host}:{port}, store {store}", host=host, port=bound, store=store_dir)
    if ports_file:
        write_json_atomically(Path(ports_file), {"http": bound})
    reactor.run()
    return 0
