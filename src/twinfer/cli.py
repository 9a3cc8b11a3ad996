"""The `twinfer` command: serve, infer, models, token.

Flag names are a contract (DESIGN §7): extend them, never rename them.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from twinfer import __version__
from twinfer.errors import ConfigError, TwinferError

DEFAULT_SERVER = "127.0.0.1:9000"


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the inference server")
    p.add_argument("--model-repository", type=Path, help="directory of models (<model>/<version>/model.onnx)")
    p.add_argument("--config", type=Path, help="YAML settings file")
    p.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--tcp-port", type=int, help="game protocol port (default 9000; 0 = any free port; -1 = off)")
    p.add_argument("--udp-port", type=int, help="stream port (default 9001)")
    p.add_argument("--http-port", type=int, help="KServe HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=int, help="KServe gRPC port (default 8001)")
    p.add_argument("--metrics-port", type=int, help="Prometheus metrics port (default 8002)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument("--ports-file", type=Path, help="write the bound ports as JSON here once listening")
    p.add_argument("--status-file", type=Path, help="write status JSON here every second (supervisor: workers)")
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument("--log-level", choices=["debug", "info", "warn", "error"])
    p.add_argument("--insecure-dev", action="store_true", default=None,
                   help="no token secret: anyone may connect (local development only)")
    p.add_argument("--token-secret", help="HMAC secret for login tokens (prefer TWINFER_AUTH__TOKEN_SECRET)")
    p.add_argument("--config-server", help="config server URL (with --service-group)")
    p.add_argument("--service-group", help="service group whose settings to pull and watch")
    p.add_argument("--repository-poll", type=float, dest="repository_poll_s",
                   help="seconds between repository scans for hot reload (0 = off)")


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=DEFAULT_SERVER, help=f"game protocol HOST:PORT (default {DEFAULT_SERVER})")
    p.add_argument("--token", help="login token (see `twinfer token`)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a reply")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinfer", description="Real-time AI inference server on Twisted.")
    parser.add_argument("--version", action="version", version=f"twinfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)

    p = sub.add_parser("infer", help="run one inference against a server")
    p.add_argument("model")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy|JSON",
                   help="an input tensor: a .npy file or a JSON array (repeatable)")
    p.add_argument("--version", dest="model_version", help="model version (default: newest)")
    p.add_argument("--output", action="append", default=[], help="output to return (default: all)")
    p.add_argument("--datatype", help="datatype for JSON inputs (default: from model metadata)")
    p.add_argument("--save", type=Path, help="write outputs to this .npz file as well")
    _add_client_args(p)

    p = sub.add_parser("models", help="list the models a server serves")
    _add_client_args(p)

    p = sub.add_parser("stream", help="capture side: open a stream and send frames over UDP")
    p.add_argument("--server", default=DEFAULT_SERVER, help=f"game protocol HOST:PORT (default {DEFAULT_SERVER})")
    p.add_argument("--model", default="face_blendshapes")
    p.add_argument("--source", default="synthetic",
                   help="synthetic | image:FILE (one picture repeated at --fps) | video:FILE (played at --fps, "
                        "looping) | camera:N; image, video and camera need the `video` extra (OpenCV)")
    p.add_argument("--fps", type=float, default=60.0, help="frames per second to send (default 60)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="how long to stream: fps x seconds frames are sent (default 10)")
    p.add_argument("--calibrate-seconds", type=float, metavar="N",
                   help="once the stream is open, take your neutral face over N seconds (face_tracker; 0 < N <= 60)")
    p.add_argument("--pixel-format", choices=("RGB8", "RGBA8", "BGRA8", "GRAY8"),
                   help="raw frames in this format (default RGB8, GRAY8 for a grey source): RGBA8 and BGRA8 are what "
                   "Unity textures and Unreal read-backs hold, to try an engine's wire format")
    p.add_argument("--landmarks", action="store_true",
                   help="ask for the face tracker's 468 landmarks in each result (native receivers get them)")
    p.add_argument("--jpeg", type=int, metavar="QUALITY",
                   help="send each frame as a JPEG of this quality (1-100; 85 is a good camera setting): a 640x480 "
                        "frame is ~40 KB instead of 900 KB raw")
    p.add_argument("--vmc", action="append", default=[], metavar="HOST:PORT", help="VMC (OSC) receiver")
    p.add_argument("--livelink", action="append", default=[], metavar="HOST:PORT", help="Live Link Face receiver")
    p.add_argument("--native", action="append", default=[], metavar="HOST:PORT", help="StreamResult receiver")
    p.add_argument("--smoothing", action="store_true", help="One Euro filter on the outputs")
    p.add_argument("--token", help="login token")
    p.add_argument("--size", type=int, default=256, help="synthetic frame width and height (default 256)")
    p.add_argument("--record", type=Path, metavar="FILE.jsonl",
                   help="write each frame's send time and driving values (synthetic source) as JSON lines")

    p = sub.add_parser("receive", help="print what a VMC or Live Link receiver gets (for people without an engine)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--vmc", type=int, metavar="PORT", help="UDP port to listen on for VMC (default port 39539)")
    group.add_argument("--livelink", type=int, metavar="PORT",
                       help="UDP port to listen on for Live Link Face (default port 11111)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--record", type=Path, metavar="FILE.jsonl", help="write every frame received as JSON lines")
    p.add_argument("--compare", type=Path, metavar="SENT.jsonl",
                   help="at the end, per-shape correlation with what `twinfer stream --record` sent")

    p = sub.add_parser("bot", help="load, stress, spike, soak, failover and concurrency tests")
    p.add_argument("scenario_file", nargs="?", type=Path, metavar="SCENARIO.yaml")
    p.add_argument("--scenario", dest="scenario_file_flag", type=Path, help="scenario YAML (same as the positional)")
    p.add_argument("--target", help="HOST:PORT")
    p.add_argument("--protocol", choices=["tcp", "udp", "http", "grpc"])
    p.add_argument("--model")
    p.add_argument("--test", choices=["load", "stress", "spike", "soak", "failover", "concurrency"])
    group = p.add_mutually_exclusive_group()
    group.add_argument("--users", type=int, help="closed model: concurrent virtual users")
    group.add_argument("--rate", type=float, help="open model: requests per second")
    p.add_argument("--duration", help="e.g. 10s, 2m")
    p.add_argument("--warmup", help="load before the measured run, not counted (default 1s; 0 for none)")
    p.add_argument("--processes", type=int)
    p.add_argument("--threshold", action="append", default=[], dest="thresholds", help="e.g. 'p99<5ms' (repeatable)")
    p.add_argument("--json", type=Path, help="write the JSON summary here")
    p.add_argument("--report", type=Path, help="write the HTML report here")
    p.add_argument("--token", help="login token (tcp, udp; http sends it as Authorization: Bearer)")
    p.add_argument("--timeout", help="per-request timeout (default 10s)")
    p.add_argument("--metrics-url", help="server /metrics to sample during soak (RSS drift)")
    p.add_argument("--failover-command", help="shell command run during a failover test")
    p.add_argument("--failover-at", help="when to run it (default 2s)")

    p = sub.add_parser("validate", help="run a model version against its validation set (the gate), offline")
    p.add_argument("model")
    p.add_argument("--model-repository", type=Path, required=True)
    p.add_argument("--version", dest="model_version", help="version directory (default: the newest)")

    p = sub.add_parser("train", help="train a model in this process and publish it as a new version (needs the "
                                     "`train` extra: PyTorch)")
    p.add_argument("task", choices=["face-blendshapes"], help="what to train")
    p.add_argument("--repository", type=Path, required=True, help="model repository to publish the version into")
    p.add_argument("--model-name", default="face_blendshapes", help="model directory (default face_blendshapes)")
    p.add_argument("--samples", type=int, default=24_000, help="rendered training faces (default 24000)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads for rendering and training (default: all cores)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke tests, a deliberately bad model)")
    p.add_argument("--formats", default="onnx,torchscript",
                   help="exports, comma-separated: onnx, torchscript, torch_export, savedmodel, keras "
                        "(default onnx,torchscript)")
    p.add_argument("--publish-anyway", action="store_true",
                   help="publish a version that misses its validation gate (default: refuse, exit 2; a server "
                        "would refuse it too, and after a restart it must not hide the version that serves)")

    p = sub.add_parser("config-server", help="serve service-group configs over HTTP")
    p.add_argument("--port", type=int, default=20100)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--store", type=Path, required=True, help="directory of group configs (versions kept)")
    p.add_argument("--write-token", help="token for PUT (prefer TWINFER_CONFIG_WRITE_TOKEN)")
    p.add_argument("--ports-file", type=Path, help="write the bound port as JSON once listening")

    p = sub.add_parser("status", help="workers of a `serve --workers N` supervisor: pids, uptime, restarts, sessions")
    p.add_argument("--status-file", type=Path, help="the supervisor's status file (default: PORTS_FILE.status.json)")
    p.add_argument("--ports-file", type=Path, help="the --ports-file the supervisor was started with")

    p = sub.add_parser("token", help="mint a login token with the server's secret")
    p.add_argument("user")
    p.add_argument("--secret", help="token secret (default: TWINFER_AUTH__TOKEN_SECRET)")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (0 = never)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"serve": cmd_serve, "infer": cmd_infer, "models": cmd_models, "token": cmd_token,
               "stream": cmd_stream, "receive": cmd_receive, "train": cmd_train, "bot": cmd_bot, "status": cmd_status,
               "config-server": cmd_config_server, "validate": cmd_validate}[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"twinfer: {exc}", file=sys.stderr)
        return 2
    except TwinferError as exc:
        print(f"twinfer: {type(exc).__name__}: {exc.message}", file=sys.stderr)
        return 1
    except (ConnectionError, TimeoutError, socket.gaierror) as exc:
        print(f"twinfer: cannot reach the server: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a local problem (a file, a port of this machine): not the server's
        where = f": {exc.filename}" if exc.filename else ""
        print(f"twinfer: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C ends `twinfer stream` (and friends) without a traceback
        print("twinfer: interrupted", file=sys.stderr)
        return 130


# --- serve ------------------------------------------------------------------------------------------------------

SERVE_OVERRIDES = (
    "model_repository", "host", "tcp_port", "udp_port", "http_port", "grpc_port", "metrics_port", "workers",
    "ports_file", "status_file",
    "log_format", "log_level", "insecure_dev", "repository_poll_s",
)


def cmd_serve(args: argparse.Namespace) -> int:
    from twinfer.config import load_settings
    from twinfer.server.run import run_server

    overrides: dict[str, Any] = {key: getattr(args, key) for key in SERVE_OVERRIDES}
    overrides["auth.token_secret"] = args.token_secret
    overrides["config_server"] = args.config_server
    overrides["service_group"] = args.service_group
    settings = load_settings(args.config, cli_overrides=overrides)
    group_version, group_source = 0, ""
    if settings.config_server and settings.service_group:
        from twinfer.configserver.client import pull_group

        document, group_source = pull_group(settings.config_server, settings.service_group,
                                            settings.config_cache_dir)
        group_version = int(document["version"])
        label = f"service group {settings.service_group} v{group_version}"
        settings = load_settings(args.config, cli_overrides=overrides,
                                 group_layer=(label, document.get("settings") or {}))

    def reload(group_layer):
        return load_settings(args.config, cli_overrides=overrides, group_layer=group_layer)

    return run_server(settings, reload, group_version, group_source)


# --- client commands ----------------------------------------------------------------------------------------------

def _connect(args: argparse.Namespace):
    from twinfer.client import Client

    host, _, port = args.server.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--server {args.server!r}: expected HOST:PORT")
    return Client(host, int(port), token=args.token, timeout=args.timeout, client_name="twinfer-cli")


def _parse_input(spec: str, datatype: str | None) -> tuple[str, np.ndarray]:
    from twinfer.inference.datatypes import to_numpy_dtype

    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise ConfigError(f"--input {spec!r}: expected NAME=FILE.npy or NAME=<JSON array>")
    if value.endswith(".npy"):
        if not Path(value).is_file():
            raise ConfigError(f"--input {name}: no file {value}")
        return name, np.load(value, allow_pickle=False)
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--input {name}: not a .npy path and not JSON ({exc})") from None
    return name, np.asarray(data, dtype=to_numpy_dtype(datatype) if datatype else None)


def cmd_infer(args: argparse.Namespace) -> int:
    from twinfer.inference.datatypes import to_numpy_dtype

    parsed = [(spec, *_parse_input(spec, args.datatype)) for spec in args.input]  # local mistakes before the network
    with _connect(args) as client:
        meta = client.model_metadata(args.model, args.model_version)
        declared = {t.name: t.datatype for t in meta.inputs}
        inputs = {}
        for spec, name, array in parsed:
            if name in declared and not args.datatype and not spec.endswith(".npy"):
                array = array.astype(to_numpy_dtype(declared[name]))
            inputs[name] = array
        started = time.perf_counter()
        outputs = client.infer(args.model, inputs, version=args.model_version, outputs=args.output or None)
        elapsed_ms = (time.perf_counter() - started) * 1e3
    labels = {t.name: list(t.labels) for t in meta.outputs}
    result = {}
    for name, array in outputs.items():
        entry: dict[str, Any] = {"datatype": str(array.dtype), "shape": list(array.shape), "data": array.tolist()}
        if labels.get(name):
            entry["labels"] = labels[name]
        result[name] = entry
    print(json.dumps({"model": args.model, "latency_ms": round(elapsed_ms, 3), "outputs": result}))
    if args.save:
        np.savez(args.save, **outputs)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        models = client.models()
    width = max((len(m.name) for m in models), default=0)
    for model in models:  # aligned columns, as the README shows them
        versions = ",".join(model.versions) or "-"
        print(f"{model.name:<{width}}  {model.state:<11}  versions={versions}  {model.reason}".rstrip())
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    from twinfer.streaming.capture import run_capture

    receivers = [(kind, address) for kind in ("vmc", "livelink", "native") for address in getattr(args, kind)]
    return run_capture(args.server, args.model, args.source, args.fps, args.seconds, receivers, args.token,
                       args.smoothing, record=args.record, size=args.size, calibrate_seconds=args.calibrate_seconds,
                       jpeg_quality=args.jpeg, pixel_format=args.pixel_format, want_landmarks=args.landmarks)


def cmd_receive(args: argparse.Namespace) -> int:
    if args.livelink is not None:
        from twinfer.streaming.livelink_receiver import run_livelink_receiver

        if args.record or args.compare:
            raise ConfigError("receive: --record and --compare work with --vmc only")
        return run_livelink_receiver(args.host, args.livelink, args.seconds)
    from twinfer.streaming.receiver import run_vmc_receiver

    for flag, path in (("--compare", args.compare), ("--record", args.record)):  # now, not after listening
        # --compare's file may still be being written by `twinfer stream --record`; its folder must exist already
        if path is not None and not path.resolve().parent.is_dir():
            raise ConfigError(f"receive: {flag} {path}: no folder {path.resolve().parent}")

    return run_vmc_receiver(args.host, args.vmc, args.seconds, record=args.record, compare=args.compare)


def cmd_bot(args: argparse.Namespace) -> int:
    from twinfer.bot.runner import main_run
    from twinfer.bot.scenario import load_scenario

    overrides: dict[str, Any] = {key: getattr(args, key) for key in (
        "target", "protocol", "model", "test", "users", "rate", "duration", "warmup", "processes", "thresholds", "json",
        "report", "token", "timeout", "metrics_url")}
    if args.failover_command or args.failover_at:
        overrides["failover"] = {k: v for k, v in (("command", args.failover_command), ("at", args.failover_at)) if v}
    scenario = load_scenario(args.scenario_file or args.scenario_file_flag, overrides)
    for text in scenario.thresholds:  # fail fast on a typo, before any load is sent
        from twinfer.bot.thresholds import parse_threshold

        parse_threshold(text)
    return main_run(scenario)


def cmd_train(args: argparse.Namespace) -> int:
    try:
        from twinfer.training.face_command import FaceTrainOptions, run_face_training
        from twinfer.training.train_face import TrainSettings
    except ImportError as exc:
        raise ConfigError(f"twinfer train needs PyTorch: pip install 'twinfer[train]' ({exc})") from None
    import os

    settings = TrainSettings(samples=args.samples, epochs=args.epochs, batch_size=args.batch_size,
                             learning_rate=args.learning_rate, seed=args.seed,
                             threads=args.threads or os.cpu_count() or 1, max_steps=args.max_steps)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    run_face_training(FaceTrainOptions(args.repository, args.model_name, formats, settings, args.publish_anyway))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from twinfer.backends import BackendOptions, load_backend
    from twinfer.inference.config_loading import find_model_file, load_model_config
    from twinfer.inference.validation_gate import validate

    model_dir = args.model_repository / args.model
    versions = sorted(int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit())
    if not versions:
        raise ConfigError(f"validate: no version directories in {model_dir}")
    version = args.model_version or str(versions[-1])
    model_file = find_model_file(model_dir / version)
    if model_file is None:
        raise ConfigError(f"validate: no model file in {model_dir / version}")
    config = load_model_config(model_dir, model_file)
    model_file = find_model_file(model_dir / version, config.backend) or model_file
    if config.validation is None:
        raise ConfigError(f"validate: {model_dir} config has no `validation` section")
    backend = load_backend(config, model_file, BackendOptions())
    report = validate(config, backend, model_dir)
    print(f"{args.model} version {version}: {report.summary()}")
    return 0 if report.passed else 1


def cmd_config_server(args: argparse.Namespace) -> int:
    import os

    from twinfer.configserver.service import run_config_server

    token = args.write_token or os.environ.get("TWINFER_CONFIG_WRITE_TOKEN", "")
    return run_config_server(args.host, args.port, args.store, token, args.ports_file)


def cmd_status(args: argparse.Namespace) -> int:
    from twinfer.supervisor import print_status

    path = args.status_file or (Path(f"{args.ports_file}.status.json") if args.ports_file else None)
    if path is None:
        raise ConfigError("status: pass --status-file or --ports-file")
    return print_status(path)


def cmd_token(args: argparse.Namespace) -> int:
    import os

    from twinfer.security.tokens import TokenAuthority

    secret = args.secret or os.environ.get("TWINFER_AUTH__TOKEN_SECRET", "")
    if not secret:
        raise ConfigError("token: no secret (pass --secret or set TWINFER_AUTH__TOKEN_SECRET)")
    expires = int(time.time()) + args.ttl if args.ttl else 0
    print(TokenAuthority(secret).issue(args.user, expires))
    return 0
