"""Layered settings and log formatting."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pydantic import BaseModel
from twisted.logger import LogLevel

from twinfer.config import Settings, load_settings, settings_reference_markdown
from twinfer.errors import ConfigError
from twinfer.logs import json_line, json_lines_observer


def test_defaults_follow_the_contract():
    s = load_settings(environ={})
    assert (s.host, s.tcp_port, s.udp_port, s.http_port, s.grpc_port) == ("127.0.0.1", 9000, 9001, 8000, 8001)
    assert s.onnx.intra_op_threads == 1 and not s.insecure_dev


def test_yaml_then_env_then_cli(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("tcp_port: 9100\nhttp_port: 8100\nonnx:\n  intra_op_threads: 3\nauth:\n  token_secret: fromfile\n")
    s = load_settings(f, environ={"TWINFER_HTTP_PORT": "8200", "TWINFER_AUTH__TOKEN_SECRET": "fromenv"},
                      cli_overrides={"tcp_port": 0, "host": None, "auth.token_secret": None})
    assert (s.tcp_port, s.http_port, s.onnx.intra_op_threads, s.auth.token_secret) == (0, 8200, 3, "fromenv")


def test_env_booleans_and_unrelated_variables():
    s = load_settings(environ={"TWINFER_INSECURE_DEV": "true", "PATH": "/bin", "twinfer_log_format": "json"})
    assert s.insecure_dev and s.log_format == "json"


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"environ": {"TWINFER_TCP_PORT": "nine"}}, "tcp_port (from TWINFER_TCP_PORT)"),
        ({"environ": {"TWINFER_NOPE": "1"}}, "nope (from TWINFER_NOPE): unknown key"),
        ({"environ": {}, "cli_overrides": {"tcp_port": 70000}}, "tcp_port (from command line)"),
        ({"environ": {"TWINFER_ONNX__INTRA_OP_THREAD": "2"}}, "onnx.intra_op_thread"),
    ],
)
def test_errors_name_the_key_and_its_source(kwargs, words):
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_unknown_yaml_key_names_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("onnx:\n  intra_op_thread: 2\n")
    with pytest.raises(ConfigError, match=rf"onnx.intra_op_thread \(from {f}\): unknown key"):
        load_settings(f, environ={})


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_reference_lists_every_key_and_the_readme_shows_it():
    table = settings_reference_markdown()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for row in table.splitlines()[2:]:
        assert row in readme, f"README config reference is stale: run settings_reference_markdown() ({row})"
    assert "`auth.token_secret` | `TWINFER_AUTH__TOKEN_SECRET`" in table


def test_json_log_lines_parse():
    class Boom(Exception):
        pass

    from twisted.python.failure import Failure

    try:
        raise Boom("x")
    except Boom:
        failure = Failure()
    event = {"log_time": 0.0, "log_level": LogLevel.warn, "log_namespace": "t", "log_format": "hi {who}",
             "who": "you", "log_failure": failure}
    record = json.loads(json_line(event))
    assert record["message"] == "hi you" and record["level"] == "warn" and "Boom" in record["traceback"]
    stream = io.StringIO()
    json_lines_observer(stream)(event)
    assert stream.getvalue().endswith("\n") and json.loads(stream.getvalue())["namespace"] == "t"


def test_cli_overrides_env_and_nested_env_keeps_yaml_siblings(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("auth:\n  admin_token: adm\n  token_ttl_s: 60\n")
    s = load_settings(f, environ={"TWINFER_TCP_PORT": "9100", "TWINFER_AUTH__TOKEN_TTL_S": "120",
                                  "TWINFER_ONNX__INTRA_OP_THREADS": "2"},
                      cli_overrides={"tcp_port": 9200, "auth.token_ttl_s": 30})
    assert (s.tcp_port, s.auth.token_ttl_s, s.auth.admin_token, s.onnx.intra_op_threads) == (9200, 30, "adm", 2)


def test_booleans_accept_1_and_0():
    assert load_settings(environ={"TWINFER_INSECURE_DEV": "1"}).insecure_dev
    assert not load_settings(environ={"TWINFER_INSECURE_DEV": "0"}).insecure_dev


def test_a_replaced_leaf_reports_the_layer_that_replaced_it():
    with pytest.raises(ConfigError, match=r"tcp_port \(from command line\)"):
        load_settings(environ={"TWINFER_TCP_PORT": "1"}, cli_overrides={"tcp_port.x": 1})


@pytest.mark.parametrize("name", ["TWINFER_", "TWINFER_AUTH__", "TWINFER_AUTH____TOKEN_SECRET"])
def test_malformed_env_names_are_named(name):
    with pytest.raises(ConfigError, match=rf"{name}: not a setting name"):
        load_settings(environ={name: "x"})


def _dotted_keys(model, prefix=""):
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _dotted_keys(field.annotation, f"{prefix}{name}.")
        else:
            assert field.description, f"{prefix}{name} has no description"
            yield f"{prefix}{name}"


def test_reference_has_a_row_for_every_key():
    table = settings_reference_markdown()
    for key in _dotted_keys(Settings):
        env = "TWINFER_" + key.upper().replace(".", "__")
        assert f"| `{key}` | `{env}` |" in table


def test_setup_logging_begins_once(monkeypatch):
    import twinfer.logs as logs

    calls = []

    class FakeBeginner:
        def beginLoggingTo(self, observers, redirectStandardIO=True):
            calls.append((observers, redirectStandardIO))

    monkeypatch.setattr(logs, "globalLogBeginner", FakeBeginner())
    monkeypatch.setattr(logs, "_started", False)
    logs.setup_logging("json", "warn", io.StringIO())
    logs.setup_logging("text", "debug", io.StringIO())
    assert len(calls) == 1 and calls[0][1] is False
