"""topology.yaml validation: each mistake is one line that names its place."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.runtime.settings import PROJECT_DIR
from pipelines.runtime.topology import TopologyInvalid, load_topology, render_mermaid, render_text, served_models

HEADER = """
version: 1
topics:
  sf.ingress:  {partitions: 2, record: RawInbound}
  sf.messages: {partitions: 2, record: Message}
  sf.outbound: {partitions: 2, record: OutboundMessage}
  sf.escalations: {partitions: 2, record: Escalation}
  sf.events.raw: {partitions: 2, record: RawConversationEvent}
  sf.events:   {partitions: 2, record: ConversationEvent}
  sf.dlq:      {partitions: 1, record: DeadLetter}
tables:
  identities: {}
  seen: {}
  sessions: {record: SessionContext}
"""


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(header) + textwrap.dedent(body))
    return path


def issues(path: Path) -> list[str]:
    with pytest.raises(TopologyInvalid) as caught:
        load_topology(path)
    return [str(i) for i in caught.value.issues]


def test_the_shipped_topology_is_valid():
    topology = load_topology(PROJECT_DIR / "topology.yaml")
    assert set(topology.stages) == {"ingest", "agent", "analytics", "knowledge"}
    names = {node.operator.name for stage in topology.stages.values() for node in stage.root.walk()}
    assert names == {
        "normalize", "enrich_context", "nlu_model", "route", "plan", "retrieve", "llm_plan", "answer", "authorize",
        "execute",
        "compose", "guard", "format", "emit", "escalate", "redact_pii", "index_document",
    }  # fmt: skip


def test_only_the_redacting_stage_writes_the_analytics_topic():
    """Raw turn events go to the internal topic; `sf.events` is fed by `redact_pii` alone."""
    topology = load_topology(PROJECT_DIR / "topology.yaml")
    writers = {name for name, stage in topology.stages.items() if "sf.events" in stage.sinks}
    assert writers == {"analytics"}
    assert "sf.events.raw" in topology.stages["agent"].sinks
    analytics = topology.stages["analytics"]
    assert analytics.source == "sf.events.raw" and analytics.root.operator.name == "redact_pii"


def test_unknown_operator_is_named_with_its_line(tmp_path):
    path = write(
        tmp_path,
        """
    stages:
      ingest:
        source: sf.ingress
        tables: [identities, seen]
        operators:
          - normalise
    """,
    )
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "- normalise" in text)
    [issue] = issues(path)
    assert issue.startswith(f"{path}:{line}: stages.ingest.operators[0]: unknown operator 'normalise'")


def test_mismatched_record_types_between_operators(tmp_path):
    path = write(
        tmp_path,
        """
    stages:
      agent:
        source: sf.messages
        tables: [sessions]
        operators: [enrich_context, route]
    """,
    )
    [issue] = issues(path)
    assert "stages.agent.operators[1]: 'route' takes NluTurn but 'enrich_context' gives ContextTurn" in issue


def test_source_topic_record_must_fit_the_first_operator(tmp_path):
    path = write(
        tmp_path,
        """
    stages:
      agent:
        source: sf.ingress
        tables: [sessions]
        operators: [enrich_context]
    """,
    )
    assert any("'enrich_context' takes Message but the source topic gives RawInbound" in i for i in issues(path))


def test_topic_without_partition_count(tmp_path):
    header = HEADER.replace(
        "sf.events:   {partitions: 2, record: ConversationEvent}", "sf.events: {record: ConversationEvent}"
    )
    path = write(
        tmp_path,
        """
    stages:
      ingest:
        source: sf.ingress
        tables: [identities, seen]
        operators: [normalize]
    """,
        header=header,
    )
    assert any("topics.sf.events: topic has no partition count" in i for i in issues(path))


def test_cycle_between_stages(tmp_path):
    header = HEADER + "  loop: {}\n"
    path = write(
        tmp_path,
        """
    stages:
      first:
        source: sf.ingress
        tables: [identities, seen]
        operators: [normalize]
      second:
        source: sf.messages
        operators: ["tests.support.loop_operator:MessageToRaw"]
    """,
        header=header,
    )
    assert any("cycle between stages: first -> second -> first" in i for i in issues(path))


def test_branches_must_all_be_wired_and_known(tmp_path):
    path = write(
        tmp_path,
        """
    stages:
      agent:
        source: sf.messages
        tables: [sessions]
        operators:
          - enrich_context
          - nlu
          - route:
              branches:
                auto: [plan, authorize]
                humans: [escalate]
    """,
    )
    found = issues(path)
    assert any("'route' has no branch 'humans' (it has auto, human)" in i for i in found)
    assert any("'route' branch(es) not wired: human" in i for i in found)
    assert any("'authorize' branch(es) not wired: pass, block" in i for i in found)


def test_chain_end_without_a_topic_for_its_record(tmp_path):
    path = write(
        tmp_path,
        """
    stages:
      agent:
        source: sf.messages
        tables: [sessions]
        operators: [enrich_context, nlu]
    """,
    )
    assert any("'nlu' ends the chain with NluTurn but no topic carries it" in i for i in issues(path))


def test_bad_operator_config_names_the_field(tmp_path):
    path = write(
        tmp_path,
        """
    stages:
      ingest:
        source: sf.ingress
        tables: [identities, seen]
        operators:
          - normalize: {config: {max_text_chars: -5}}
    """,
    )
    [issue] = issues(path)
    assert "stages.ingest.operators[0].normalize.config: 'normalize' config: max_text_chars:" in issue


def test_unknown_table_and_topic(tmp_path):
    path = write(
        tmp_path,
        """
    stages:
      ingest:
        source: sf.nowhere
        tables: [ghosts]
        operators: [normalize]
    """,
    )
    found = issues(path)
    assert any("stages.ingest.source: unknown topic 'sf.nowhere'" in i for i in found)
    assert any("stages.ingest.tables[0]: unknown table 'ghosts'" in i for i in found)


def test_yaml_syntax_error_points_at_the_line(tmp_path):
    path = tmp_path / "topology.yaml"
    path.write_text("topics:\n  a: [unclosed\n")
    [issue] = issues(path)
    assert issue.startswith(f"{path}:3: yaml:")


def test_check_command_exits_non_zero_with_one_line_per_error(tmp_path):
    path = write(
        tmp_path,
        """
    stages:
      ingest:
        source: sf.ingress
        tables: [identities, seen]
        operators: [normalise, nlx]
    """,
    )
    result = CliRunner().invoke(app, ["topology", "check", str(path)])
    assert result.exit_code == 1
    assert "unknown operator 'normalise'" in result.output


def test_check_command_accepts_the_shipped_topology():
    result = CliRunner().invoke(app, ["topology", "check", str(PROJECT_DIR / "topology.yaml")])
    assert result.exit_code == 0, result.output
    assert "ok — 4 stages, 21 operators, 17 topics" in result.output


def test_show_renders_text_and_mermaid():
    topology = load_topology(PROJECT_DIR / "topology.yaml")
    text = render_text(topology)
    assert "stage agent: sf.messages -> sf.escalations, sf.events.raw, sf.outbound" in text
    assert "stage analytics: sf.events.raw -> sf.events" in text
    assert "route: NluTurn -> RoutedTurn" in text
    mermaid = render_mermaid(topology)
    assert mermaid.startswith("flowchart LR")
    assert "-->|human|" in mermaid and "t_sf_ingress --> ingest_normalize_0" in mermaid
    result = CliRunner().invoke(app, ["topology", "show", "--mermaid"])
    assert result.exit_code == 0 and "flowchart LR" in result.output


def test_only_a_worker_of_table_less_stages_gets_a_consumer_group_of_its_own():
    from pipelines.runtime.app import consumer_group

    topology = load_topology(PROJECT_DIR / "topology.yaml")
    assert consumer_group(topology, list(topology.stages)) == "supportflow"
    assert consumer_group(topology, ["ingest", "agent"]) == "supportflow", "tables' changelogs are named by it"
    assert consumer_group(topology, ["analytics"]) == "supportflow-analytics"
    assert consumer_group(topology, ["knowledge"]) == "supportflow-knowledge"


def without_answer(tmp_path: Path, knowledge_stage: bool = True) -> Path:
    """The shipped topology with `answer` switched off as its comment says: `retrieve` gone too, and `answer`'s
    `reply` chain moved up under `plan`;
    without `knowledge_stage`, the stage that writes the knowledge base is gone too."""
    spec = yaml.safe_load((PROJECT_DIR / "topology.yaml").read_text())
    if not knowledge_stage:
        del spec["stages"]["knowledge"]
    (route,) = [op["route"] for op in spec["stages"]["agent"]["operators"] if isinstance(op, dict) and "route" in op]
    *planners, retrieve, answer = route["branches"]["auto"]
    assert "retrieve" in retrieve
    route["branches"]["auto"] = [*planners, *answer["answer"]["branches"]["reply"]]
    route["config"]["out_of_scope_to_auto"] = False
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_the_topology_stays_valid_with_answer_switched_off(tmp_path) -> None:
    topology = load_topology(without_answer(tmp_path))
    names = {node.operator.name for node in topology.stages["agent"].root.walk()}
    assert not {"retrieve", "answer"} & names and {"plan", "authorize", "execute", "guard", "escalate"} <= names


def test_the_topology_stays_valid_with_the_llm_planner_deleted_as_its_comment_says(tmp_path) -> None:
    """Its `reply` chain moves up under `answer`'s `reply`, and `answer` hands knowledge gaps over itself again."""
    spec = yaml.safe_load((PROJECT_DIR / "topology.yaml").read_text())
    (route,) = [op["route"] for op in spec["stages"]["agent"]["operators"] if isinstance(op, dict) and "route" in op]
    (answer,) = [op["answer"] for op in route["branches"]["auto"] if isinstance(op, dict) and "answer" in op]
    ((llm_plan,),) = [[op["llm_plan"] for op in answer["branches"]["reply"] if "llm_plan" in op]]
    answer["branches"]["reply"] = llm_plan["branches"]["reply"]
    answer["config"]["gaps_to_reply"] = False
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    names = {node.operator.name for node in load_topology(path).stages["agent"].root.walk()}
    assert "llm_plan" not in names and {"plan", "answer", "authorize", "execute", "compose", "guard"} <= names


def test_the_stack_serves_only_the_models_its_operators_name(tmp_path) -> None:
    """The shipped topology's `retrieve` and `answer` embed questions with the text embedder (and its `knowledge`
    stage embeds documents), so Triton serves it too; a topology with none of them does not call it and must not
    load it."""
    from connectors.triton.server import EmbeddedTriton

    assert served_models(load_topology(PROJECT_DIR / "topology.yaml")) == ["intent_classifier", "text_embedder"]
    assert served_models(load_topology(without_answer(tmp_path))) == ["intent_classifier", "text_embedder"]
    models = served_models(load_topology(without_answer(tmp_path, knowledge_stage=False)))
    assert models == ["intent_classifier"]
    argv = EmbeddedTriton(PROJECT_DIR / "triton_models", models=models).argv()
    assert "--model-control-mode=explicit" in argv and "--load-model=intent_classifier" in argv
    assert not any("text_embedder" in arg for arg in argv)
    every_model = EmbeddedTriton(PROJECT_DIR / "triton_models").argv()
    assert not any(arg.startswith("--model-control-mode") for arg in every_model)


def test_capping_partitions_keeps_equal_counts_equal_and_changes_nothing_else():
    topology = load_topology(PROJECT_DIR / "topology.yaml")
    capped = topology.with_partitions_at_most(2)
    before = {name: t.partitions for name, t in topology.spec.topics.items()}
    after = {name: t.partitions for name, t in capped.spec.topics.items()}
    assert after == {name: min(count or 1, 2) for name, count in before.items()}
    assert {after[a] == after[b] for a in before for b in before if before[a] == before[b]} == {True}
    assert capped.stages is topology.stages and topology.with_partitions_at_most(None) is topology
    assert before["sf.ingress"] == 8, "capping makes a copy"
