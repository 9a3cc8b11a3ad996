"""Issue #17 finding 3: the config server's error cases answer typed 4xx / 507 / 503 (never a 500 with a
traceback), a failed write leaves no temporary file, and the versions are indexed rather than listed per request."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from twinfer.configserver.service import ConfigServerApi
from twinfer.configserver.store import ConfigStore
from twinfer.errors import InvalidInput
from twinfer.http.connection import HttpRequest
from twinfer.http.errors import status_for

TOKEN = "secret"


def request(method: str, path: str, query: str = "", body: bytes = b"") -> HttpRequest:
    return HttpRequest(method, path, query, {b"authorization": f"Bearer {TOKEN}".encode()}, body)


def put(api: ConfigServerApi, group: str, settings: dict) -> object:
    return api(request("PUT", f"/v1/groups/{group}", body=json.dumps({"settings": settings}).encode()))


def status_of(api: ConfigServerApi, req: HttpRequest) -> int:
    try:
        return api(req).status
    except Exception as exc:  # noqa: BLE001 - the connection maps exactly this to the status line
        return status_for(exc)


@pytest.fixture
def api(tmp_path: Path) -> ConfigServerApi:
    api = ConfigServerApi(ConfigStore(tmp_path / "store"), TOKEN, Clock())
    assert put(api, "stage", {"log_level": "warn"}).status == 201
    return api


@pytest.mark.parametrize("query", ["version=abc", "wait=0x10", "version=%C2%B2", "wait=nan", "wait=inf",
                                   "version=1&wait=1e9", "version=" + "9" * 5000])
def test_bad_query_values_are_a_400_naming_the_key(api, query):
    """Finding 3: `?version=abc` and `?wait=0x10` raised ValueError (500); nan/inf/exponents slipped through."""
    with pytest.raises(InvalidInput) as info:
        api(request("GET", "/v1/groups/stage", query))
    assert status_for(info.value) == 400 and query.split("=")[-2].split("&")[-1] in info.value.message


def test_deeply_nested_json_is_a_400(api):
    """Finding 3: json.loads raised RecursionError (not a ValueError): 500 with a traceback."""
    deep = b'{"settings": {"log_level": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with pytest.raises(InvalidInput, match="nested too deeply"):
        api(request("PUT", "/v1/groups/stage", body=deep))


def _failing_writer(err: int):
    def write(tmp: Path, settings: dict) -> None:
        tmp.write_text('{"log_level": "de')  # half a file, then the disk says no
        raise OSError(err, os.strerror(err))

    return write


@pytest.mark.parametrize("err, status", [(errno.ENOSPC, 507), (errno.EDQUOT, 507), (errno.EROFS, 503)])
def test_a_full_or_read_only_store_answers_typed_and_leaves_no_temp_file(tmp_path, err, status):
    """Finding 3: a full store answered 500 and left a `.new-*` temp file per failed PUT."""
    root = tmp_path / "store"
    good = ConfigServerApi(ConfigStore(root), TOKEN, Clock())
    assert put(good, "stage", {"log_level": "warn"}).status == 201
    broken = ConfigServerApi(ConfigStore(root, write_file=_failing_writer(err)), TOKEN, Clock())
    for _ in range(3):
        response = put(broken, "stage", {"log_level": "debug"})
        assert response.status == status
        assert "config store" in json.loads(response.body)["error"]
    assert sorted(p.name for p in (root / "stage").iterdir()) == ["1.json"]
    assert broken.store.latest("stage") == 1
    assert status_of(broken, request("GET", "/v1/groups/stage")) == 200  # reads still work


def test_leftover_temp_files_from_a_killed_writer_are_removed_at_start(tmp_path):
    root = tmp_path / "store"
    (root / "stage").mkdir(parents=True)
    (root / "stage" / "1.json").write_text("{}")
    (root / "stage" / ".new-abc").write_text("{")
    (root / "stage" / ".2.json.xyz.tmp").write_text("{")
    assert ConfigStore(root).versions("stage") == [1]
    assert sorted(p.name for p in (root / "stage").iterdir()) == ["1.json"]


def test_puts_do_not_list_the_directory_each_time(tmp_path, monkeypatch):
    """Finding 3: a glob per request made a PUT at 3,000 versions 10x slower; the store keeps an index."""
    root = tmp_path / "store"
    (root / "stage").mkdir(parents=True)
    for v in range(1, 301):
        (root / "stage" / f"{v}.json").write_text("{}")
    api = ConfigServerApi(ConfigStore(root), TOKEN, Clock())
    listings = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda *a: listings.append(a) or real_scandir(*a))
    for i in range(20):
        assert json.loads(put(api, "stage", {"log_level": "warn"}).body)["version"] == 301 + i
        assert status_of(api, request("GET", "/v1/groups/stage")) == 200
    assert len(listings) <= 1
    assert api.store.versions("stage") == list(range(1, 321))
