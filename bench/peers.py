"""The peer servers of ../shared/bench/PEERS.md, set up and started by the harness: Triton 2.51 (the nvidia-pytriton
wheel's tritonserver with a Python-backend model running ONNX Runtime), MLServer 1.7.1 (a custom ORT runtime),
LitServe 0.2.19, and perf_analyzer 2.51 as the load tool. Each lives in its own venv under `.peers/` (ignored by
git); nothing of theirs is vendored. A peer that cannot be set up or started raises PeerError with the reason and
the log tail, which the harness reports instead of the numbers.

Every server runs in its own process group (setsid) and is stopped with SIGTERM to the group, then SIGKILL after
a grace period; the harness checks the ports are free before the next one starts (PEERS.md: LitServe leaves
children behind otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / ".peers"
ENV = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}

VENVS = {
    "triton": ["nvidia-pytriton==0.7.0", "onnxruntime==1.32.0"],
    "mlserver": ["mlserver==1.7.1", "uvloop==0.21.0", "onnxruntime==1.32.0"],
    "litserve": ["litserve==0.2.19", "onnxruntime==1.32.0"],
    "pa": ["tritonclient[all]==2.51.0", "nvidia-cuda-runtime-cu12==12.9.79"],
    # MediaPipe's own face mesh (bench/faces.py, tools/mediapipe_reference.py); pulls opencv-contrib, jax, matplotlib
    "mediapipe": ["mediapipe==0.10.21"],
}


class PeerError(RuntimeError):
    """A peer could not be set up or started; the message says why (with its log tail)."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def setup_venv(name: str) -> Path:
    """Create .peers/<name> and install its pinned packages once (a stamp file marks success)."""
    venv = PEERS / name
    stamp = venv / ".installed"
    if stamp.exists():
        return venv
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = PEERS / f"{name}-install.log"
    with open(log, "w") as f:
        result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *VENVS[name]], stdout=f,
                                stderr=subprocess.STDOUT, timeout=1800)
    if result.returncode != 0:
        raise PeerError(f"pip install {' '.join(VENVS[name])} failed:\n{_tail(log)}")
    stamp.touch()
    return venv


def ensure_apt(*packages: str) -> list[str]:
    """Install Debian packages that are missing (wrk, libb64-0d); returns what could not be installed."""
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return []
    if os.geteuid() != 0:
        return missing
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], capture_output=True, timeout=600)
    return [p for p in missing if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerError(f"exited with {proc.returncode} while starting:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise PeerError(f"not ready after {timeout_s:.0f} s ({url}):\n{_tail(log)}")


@dataclass
class Running:
    name: str
    pid: int
    http: int | None = None
    grpc: int | None = None
    tcp: int | None = None
    udp: int | None = None


@contextmanager
def process_group(cmd: list[str], log: Path, cwd: Path | None = None, env: dict | None = None,
                  ports: tuple[int, ...] = ()) -> Iterator[subprocess.Popen]:
    """Start `cmd` in a new session; on exit SIGTERM the group, SIGKILL it after 10 s, wait for `ports` to free."""
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env or ENV,
                                start_new_session=True)
    try:
        yield proc
    finally:
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
            # the leader is gone; children of the group may remain (LitServe): kill what is left
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        deadline = time.monotonic() + 15
        while not all(port_is_free(p) for p in ports) and time.monotonic() < deadline:
            time.sleep(0.2)


# --- models -----------------------------------------------------------------------------------------------------

TRITON_MODEL_PY = textwrap.dedent('''
    import json, os, sys
    import triton_python_backend_utils as pb_utils
    class TritonPythonModel:
        def initialize(self, args):
            cfg = json.loads(args["model_config"])
            sys.path.insert(0, cfg["parameters"]["site_packages"]["string_value"])
            import onnxruntime as ort  # lives in the venv, which the stub does not see
            so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
            path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
            self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            self.input = cfg["input"][0]["name"]; self.output = cfg["output"][0]["name"]
        def execute(self, requests):
            out = []
            for r in requests:
                x = pb_utils.get_input_tensor_by_name(r, self.input).as_numpy()
                y = self.sess.run([self.output], {self.input: x})[0]
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output, y)]))
            return out
''')


def triton_repository(directory: Path, tiny: Path, face: Path, face_dims: list[int], site_packages: Path,
                      dynamic_batching: bool) -> Path:
    """tiny and face_blendshapes as Python-backend models (Triton's wheel has no onnxruntime backend)."""
    shutil.rmtree(directory, ignore_errors=True)
    for name, onnx_file, inp, out, in_dims, out_dims in (
        ("tiny", tiny, "INPUT0", "OUTPUT0", [16], [16]),
        ("face_blendshapes", face, "image", "blendshapes", face_dims, [52]),
    ):
        (directory / name / "1").mkdir(parents=True)
        shutil.copyfile(onnx_file, directory / name / "1" / "model.onnx")
        (directory / name / "1" / "model.py").write_text(TRITON_MODEL_PY)
        batching = "dynamic_batching { max_queue_delay_microseconds: 0 }\n" if dynamic_batching else ""
        (directory / name / "config.pbtxt").write_text(textwrap.dedent(f'''\
            name: "{name}"
            backend: "python"
            max_batch_size: 64
            input  [ {{ name: "{inp}",  data_type: TYPE_FP32, dims: {in_dims} }} ]
            output [ {{ name: "{out}", data_type: TYPE_FP32, dims: {out_dims} }} ]
            instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
            parameters: {{ key: "site_packages", value: {{ string_value: "{site_packages}" }} }}
            ''') + batching)
    return directory


@contextmanager
def triton(repository: Path, work: Path) -> Iterator[Running]:
    venv = setup_venv("triton")
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    ts = site / "pytriton" / "tritonserver"
    stub = ts / "backends" / "python" / "triton_python_backend_stub"
    if not stub.exists():
        shutil.copyfile(ts / "python_backend_stubs" / "3.11" / "triton_python_backend_stub", stub)
        stub.chmod(0o755)
    pylib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_config_var("
                            "'LIBDIR'))"], capture_output=True, text=True, check=True).stdout.strip()
    http, grpc = free_port(), free_port()
    env = {**ENV, "LD_LIBRARY_PATH": f"{pylib}:{site / 'nvidia_pytriton.libs'}"}
    cmd = [str(ts / "bin" / "tritonserver"), "--model-repository", str(repository), "--backend-directory",
           str(ts / "backends"), "--http-address", "127.0.0.1", "--http-port", str(http), "--grpc-address",
           "127.0.0.1", "--grpc-port", str(grpc), "--allow-metrics", "false"]
    log = work / "triton.log"
    with process_group(cmd, log, env=env, ports=(http, grpc)) as proc:
        wait_http(f"http://127.0.0.1:{http}/v2/health/ready", proc, log)
        yield Running("triton", proc.pid, http=http, grpc=grpc)


MLSERVER_RUNTIME = textwrap.dedent('''
    import numpy as np, onnxruntime as ort
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest, InferenceResponse
    from mlserver.utils import get_model_uri
    class OrtRuntime(MLModel):
        async def load(self) -> bool:
            so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
            uri = await get_model_uri(self._settings)
            self._sess = ort.InferenceSession(uri, so, providers=["CPUExecutionProvider"])
            return True
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
            y = self._sess.run(["OUTPUT0"], {"INPUT0": x})[0]
            return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("OUTPUT0", y)])
''')


def _fresh_folder_with_tiny(folder: Path, tiny: Path) -> Path:
    """An empty folder (whatever a previous run left is removed) holding the tiny model as tiny.onnx."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copyfile(tiny, folder / "tiny.onnx")
    return folder


@contextmanager
def mlserver(tiny: Path, work: Path) -> Iterator[Running]:
    venv = setup_venv("mlserver")
    folder = _fresh_folder_with_tiny(work / "mls", tiny)
    (folder / "runtime.py").write_text(MLSERVER_RUNTIME)
    http, grpc, metrics = free_port(), free_port(), free_port()
    (folder / "settings.json").write_text(json.dumps({"host": "127.0.0.1", "http_port": http, "grpc_port": grpc,
                                                      "metrics_port": metrics, "parallel_workers": 0,
                                                      "debug": False}))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "tiny", "implementation": "runtime.OrtRuntime", "parameters": {"uri": "./tiny.onnx"},
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 16]}]}))
    log = work / "mlserver.log"
    with process_group([str(venv / "bin" / "mlserver"), "start", "."], log, cwd=folder,
                       ports=(http, grpc, metrics)) as proc:
        wait_http(f"http://127.0.0.1:{http}/v2/health/ready", proc, log)
        yield Running("mlserver", proc.pid, http=http, grpc=grpc)


LITSERVE_SERVER = textwrap.dedent('''
    import os, sys
    import numpy as np, onnxruntime as ort, litserve as ls
    class TinyAPI(ls.LitAPI):
        def setup(self, device):
            so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
            self.sess = ort.InferenceSession("tiny.onnx", so, providers=["CPUExecutionProvider"])
        def decode_request(self, request):
            inp = request["inputs"][0]
            return np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])
        def predict(self, x):
            return self.sess.run(["OUTPUT0"], {"INPUT0": x})[0]
        def encode_response(self, y):
            return {"outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": list(y.shape),
                                 "data": y.ravel().tolist()}]}
    if __name__ == "__main__":
        server = ls.LitServer(TinyAPI(api_path="/v2/models/tiny/infer"), accelerator="cpu", workers_per_device=1)
        server.run(host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False, log_level="warning")
''')


@contextmanager
def litserve(tiny: Path, work: Path) -> Iterator[Running]:
    venv = setup_venv("litserve")
    folder = _fresh_folder_with_tiny(work / "lit", tiny)
    (folder / "server.py").write_text(LITSERVE_SERVER)
    http = free_port()
    log = work / "litserve.log"
    with process_group([str(venv / "bin" / "python"), "server.py", str(http)], log, cwd=folder,
                       ports=(http,)) as proc:
        wait_http(f"http://127.0.0.1:{http}/health", proc, log)
        yield Running("litserve", proc.pid, http=http)


@contextmanager
def twinfer(repository: Path, work: Path, *args: str, name: str = "twinfer") -> Iterator[Running]:
    stem = name.replace(" ", "").replace("--", "-")
    ports_file = work / f"{stem}-ports.json"
    ports_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "twinfer", "serve", "--model-repository", str(repository), "--host", "127.0.0.1",
           "--tcp-port", "0", "--udp-port", "0", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
           "--ports-file", str(ports_file), "--insecure-dev", "--log-level", "warn", *args]
    log = work / f"{stem}.log"
    with process_group(cmd, log) as proc:
        deadline = time.monotonic() + 60
        while not ports_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise PeerError(f"twinfer did not start:\n{_tail(log)}")
            time.sleep(0.05)
        ports = json.loads(ports_file.read_text())
        yield Running(name, proc.pid, http=ports["http"], grpc=ports["grpc"], tcp=ports["tcp"],
                      udp=ports["udp"])


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (from /proc), for CPU per request."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid = int(fields[1])
        children.setdefault(ppid, []).append(int(entry.name))
        stats[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += stats.get(current, 0.0)
        todo.extend(children.get(current, []))
    return total
