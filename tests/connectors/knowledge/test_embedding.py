"""The knowledge base's embedder, the real exported model (triton_models/text_embedder), in process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from connectors.knowledge.embedding import EMBEDDER_MODEL_NAME, OnnxEmbedder, load_embedder_meta
from connectors.knowledge.protocols import Embedder
from connectors.triton.client import find_version_dir

ROOT = Path(__file__).resolve().parents[3]
TEXTS = [
    "How do I reset my password?",
    "Refunds go back to the original card within 5 to 10 business days once the parcel reaches our warehouse"
    " and has been inspected; store credit is immediate.",
    "Platinum Reserve Account: export up to 30 custom liquidity reports per month.",
    "ok",
]


@pytest.fixture(scope="module")
def version_dir() -> Path:
    found = find_version_dir(ROOT / "triton_models", EMBEDDER_MODEL_NAME)
    assert found is not None, "the exported embedder is committed under triton_models/text_embedder"
    return found


@pytest.fixture(scope="module")
def embedder(version_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(version_dir, intra_op_threads=1)


def test_the_committed_model_loads_offline_and_says_what_it_is(embedder: OnnxEmbedder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    contract: Embedder = embedder  # the type checker holds it to the protocol
    assert contract.model_id.startswith("sentence-transformers/all-MiniLM-L6-v2")
    assert contract.dimension == 384


def test_vectors_are_float32_and_unit_length(embedder: OnnxEmbedder):
    vectors = embedder.embed_passages(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed_queries([]).shape == (0, 384)


@pytest.fixture(scope="module")
def fp32_version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model exported without quantization (torch, from the installed wheel; about 30 s)."""
    from pipelines.ml.export_embedder import export_minilm

    return export_minilm(tmp_path_factory.mktemp("fp32"), quantize=False).version_dir


def test_a_batch_gives_the_same_vectors_as_one_text_at_a_time_in_fp32(fp32_version_dir: Path):
    fp32 = OnnxEmbedder(fp32_version_dir, intra_op_threads=1)
    batch = fp32.embed_passages(TEXTS)
    single = np.vstack([fp32.embed_passages([t]) for t in TEXTS])
    assert np.abs(batch - single).max() < 1e-5  # padding is masked out of the pooling


def test_the_int8_model_depends_on_its_batch_only_within_the_quantization_error(embedder: OnnxEmbedder):
    """Dynamic int8 quantization scales activations per tensor, over the whole batch: a text's vector
    moves a little with its batch-mates (most for very short texts). Known and bounded here; see README."""
    batch = embedder.embed_passages(TEXTS)
    single = np.vstack([embedder.embed_passages([t]) for t in TEXTS])
    assert ((batch * single).sum(axis=1) > 0.95).all()
    assert ((batch * single).sum(axis=1)[:3] > 0.985).all()  # texts of ordinary length


def test_meaning_decides_similarity(embedder: OnnxEmbedder):
    query = embedder.embed_queries(["I forgot my login credentials"])[0]
    passages = embedder.embed_passages(["Reset your password from the sign-in page.", "Our branches open at 9am."])
    assert passages[0] @ query > passages[1] @ query + 0.1


def test_e5_style_prefixes_from_embedder_json_are_put_before_queries_and_passages(
    version_dir: Path, embedder: OnnxEmbedder, tmp_path: Path
):
    prefixed = tmp_path / "1"
    shutil.copytree(version_dir, prefixed)
    meta = json.loads((prefixed / "embedder.json").read_text())
    (prefixed / "embedder.json").write_text(
        json.dumps({**meta, "query_prefix": "query: ", "passage_prefix": "passage: "})
    )
    e5_like = OnnxEmbedder(prefixed, intra_op_threads=1)
    assert load_embedder_meta(prefixed).query_prefix == "query: "
    text = "international shipping times"
    assert np.allclose(e5_like.embed_queries([text]), embedder.embed_passages(["query: " + text]), atol=1e-5)
    assert np.allclose(e5_like.embed_passages([text]), embedder.embed_passages(["passage: " + text]), atol=1e-5)
    assert not np.allclose(e5_like.embed_queries([text]), e5_like.embed_passages([text]), atol=1e-3)


def test_the_query_cache_embeds_each_text_once_and_answers_as_the_model_does(embedder: OnnxEmbedder):
    """`answer` compares every question with the same articles' sentences: the model sees each once."""
    from concurrent.futures import ThreadPoolExecutor

    from connectors.knowledge.embedding import CachedQueryEmbedder
    from tests.support.knowledge import CountingEmbedder

    counting = CountingEmbedder(embedder)
    cached = CachedQueryEmbedder(counting, max_texts=3)
    sentences = ["Refunds take 5 to 10 business days.", "We ship to 40 countries.", "Gift cards never expire."]
    first = cached.embed_queries(["how long do refunds take?", *sentences])
    with ThreadPoolExecutor(4) as pool:  # the retriever calls it from worker threads
        again = list(pool.map(lambda _: cached.embed_queries(sentences), range(8)))

    assert np.allclose(first, embedder.embed_queries(["how long do refunds take?", *sentences]), atol=1e-6)
    assert all(np.array_equal(a, first[1:]) for a in again)
    assert counting.queries_embedded == 4 and cached.embedded == 4, "the sentences were embedded once"
    # three texts kept: the question went out first, as the least recently used
    cached.embed_queries(["a fourth question"])
    assert cached.embedded == 5 and cached.embed_queries(["how long do refunds take?"]).shape == (1, cached.dimension)
    assert cached.embedded == 6 and cached.embed_queries([]).shape == (0, cached.dimension)
    assert cached.embed_passages(sentences).shape == (3, cached.dimension) and counting.passages_embedded == 3
