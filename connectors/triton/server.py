"""The embedded Triton Inference Server: the `tritonserver` binary of the nvidia-pytriton wheel.

The wheel's server is a CPU build with only the python backend. To run it on our own model
repository (not through PyTriton's Python API) it needs, as /work/shared/notes/ENVIRONMENT.md
describes: a backend directory `B/python/` holding the wheel's python backend plus the stub built
for this interpreter; `LD_LIBRARY_PATH` with this interpreter's libdir and the wheel's bundled
libraries; and this venv's `bin` first on `PATH`, because the stub runs `model.py` with the
numpy/onnxruntime of the first `python3` it finds there. `--model-config-name=cpu` makes Triton
read `<model>/configs/cpu.pbtxt` (python backend) instead of the production `config.pbtxt` (GPU).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from connectors._process import free_port, spawn, stop

__all__ = ["EmbeddedTriton", "TritonUnavailableError", "pytriton_dir"]

PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


class TritonUnavailableError(RuntimeError):
    """The nvidia-pytriton wheel (and so the tritonserver binary) is not installed or not usable."""


def pytriton_dir() -> Path:
    """The wheel's `pytriton/tritonserver` folder (binary, backends, stubs)."""
    try:
        import pytriton
    except ImportError as exc:
        raise TritonUnavailableError("nvidia-pytriton is not installed: pip install nvidia-pytriton") from exc
    root = Path(pytriton.__file__).resolve().parent / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise TritonUnavailableError(f"no tritonserver binary in {root}")
    return root


def _libs_dir() -> Path:
    root = pytriton_dir()
    return root.parents[1] / "nvidia_pytriton.libs"


def prepare_backends(cache_dir: Path) -> Path:
    """`cache_dir/python/` = the wheel's python backend + the stub for this Python; returns cache_dir."""
    root = pytriton_dir()
    stub = root / "python_backend_stubs" / PY_VERSION / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonUnavailableError(f"the wheel has no python backend stub for Python {PY_VERSION}")
    target = cache_dir / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in [*(p for p in (root / "backends" / "python").iterdir() if p.is_file()), stub]:
        dest = target / source.name
        if not dest.exists() or dest.stat().st_size != source.stat().st_size:
            tmp = dest.with_suffix(dest.suffix + f".tmp{os.getpid()}")
            shutil.copy2(source, tmp)
            tmp.replace(dest)  # atomic: two workers preparing at once never see half a file
    return cache_dir


def _default_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "supportflow" / f"triton-backends-py{PY_VERSION}"


class EmbeddedTriton:
    """`tritonserver` as a child process that dies with this one, on free ports.

    `start()` waits until `/v2/health/ready` (every model loaded); `stop()` sends SIGTERM (Triton
    stops in ~5 s) and SIGKILL if needed; `kill()` is for tests that need Triton to vanish.
    """

    def __init__(
        self,
        model_repository: Path,
        log_file: Path | None = None,
        model_config_name: str | None = "cpu",
        cache_dir: Path | None = None,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        models: Sequence[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        # Only these are loaded when given: a repository holds every model the project serves (the intent
        # classifier, the text embedder), and each python-backend model costs a stub process and its memory.
        self.models = tuple(models)
        self.log_file = log_file
        self.model_config_name = model_config_name
        self.cache_dir = cache_dir or _default_cache_dir()
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def argv(self) -> list[str]:
        backends = prepare_backends(self.cache_dir)
        argv = [
            str(pytriton_dir() / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--allow-metrics=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
        ]
        if self.model_config_name:
            argv.append(f"--model-config-name={self.model_config_name}")
        if self.models:
            argv += ["--model-control-mode=explicit", *(f"--load-model={name}" for name in self.models)]
        return argv

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        libdirs = [str(sysconfig.get_config_var("LIBDIR") or ""), str(_libs_dir())]
        if env.get("LD_LIBRARY_PATH"):
            libdirs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(d for d in libdirs if d)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def start(self, timeout_s: float = 60.0) -> EmbeddedTriton:
        process = self.launch()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.process = None
                raise RuntimeError(f"tritonserver exited with {process.returncode}; see {self.log_file}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"tritonserver was not ready within {timeout_s}s; see {self.log_file}")

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the server process on this object's ports without waiting (a supervisor's restart)."""
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.process = spawn(self.argv(), self.log_file, env=self.env())
        return self.process

    def ready(self) -> bool:
        """Whether every model is loaded (`/v2/health/ready`)."""
        try:
            return httpx.get(f"{self.http_url}/v2/health/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is not None:
            stop(self.process, timeout_s)
            self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye to clients.

        The whole process group goes, as a crashed host would take it: the python backend's stub
        processes otherwise outlive a SIGKILLed server (they do not notice its death).
        """
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # spawn() made the server a group leader
            self.process.wait(timeout=10)

    def __enter__(self) -> EmbeddedTriton:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
