"""Load, validate and compile topology.yaml: the topics, tables and stages of the dataflow.

Every problem is reported as one line naming the place (`file:line: path: message`), and all
of them at once, so a data engineer fixes a topology in one pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from operators.base import Operator
from operators.registry import UnknownOperator, resolve
from schemas import Emitted, Record, record_types

Path_ = tuple[str | int, ...]

OpT = TypeVar("OpT", bound=Operator)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopicSpec(_Spec):
    partitions: int | None = Field(default=None, ge=1)
    record: str
    replication_factor: int = Field(default=1, ge=1)
    retention_ms: int | None = None
    compacted: bool = Field(default=False, description="keep the latest record per key (cleanup.policy=compact)")


class TableSpec(_Spec):
    record: str | None = Field(default=None, description="a record name, or none for plain JSON values")
    topic: str | None = Field(
        default=None,
        description="mirror this topic, read-only, in every worker (reference data such as profiles); "
        "unset: a partitioned table of the stage, backed by a changelog",
    )


class StageSpec(_Spec):
    source: str
    tables: list[str] = Field(default_factory=list)
    max_in_flight: int = Field(default=2000, ge=1, description="records being processed at once in one worker")
    operator_timeout_s: float = Field(default=30.0, gt=0, description="a slower operator dead-letters the record")
    operators: list[Any]


class TopologySpec(_Spec):
    version: int = 1
    app_id: str = "supportflow"
    dead_letter_topic: str = "sf.dlq"
    topics: dict[str, TopicSpec]
    tables: dict[str, TableSpec] = Field(default_factory=dict)
    stages: dict[str, StageSpec]


@dataclass(frozen=True)
class TopologyIssue:
    file: str
    line: int | None
    place: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.place}: {self.message}"


class TopologyInvalid(ValueError):
    def __init__(self, issues: list[TopologyIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass
class Node:
    """One operator in a compiled chain, with either a successor or labelled branches."""

    operator: Operator
    place: str
    next: Node | None = None
    branches: dict[str, Node] = field(default_factory=dict)

    def walk(self) -> list[Node]:
        nodes = [self]
        if self.next:
            nodes += self.next.walk()
        for child in self.branches.values():
            nodes += child.walk()
        return nodes


@dataclass
class Stage:
    name: str
    source: str
    tables: list[str]
    max_in_flight: int
    operator_timeout_s: float
    root: Node
    sinks: list[str]


@dataclass
class Topology:
    spec: TopologySpec
    stages: dict[str, Stage]
    file: str

    def with_partitions_at_most(self, limit: int | None) -> Topology:
        """The same topology with every topic's partition count capped at `limit` (None: unchanged).

        Topics with equal counts keep equal counts, so whatever was co-partitioned stays so.
        """
        if limit is None:
            return self
        topics = {
            name: topic.model_copy(update={"partitions": min(topic.partitions or 1, limit)})
            for name, topic in self.spec.topics.items()
        }
        return replace(self, spec=self.spec.model_copy(update={"topics": topics}))

    def topic_for(self, record_type: type[Record]) -> str | None:
        for name, topic in self.spec.topics.items():
            if topic.record == record_type.__name__:
                return name
        return None

    def source_type(self, stage: Stage) -> type[Record]:
        return record_types()[self.spec.topics[stage.source].record]

    def operator(self, kind: type[OpT]) -> OpT | None:
        """The first operator of this class in the topology, configured as topology.yaml says; None if absent.

        How the processes around the stream (the workspace, the router) use the agent's own operators,
        with the agent's settings, instead of copies.
        """
        for stage in self.stages.values():
            for node in stage.root.walk():
                if isinstance(node.operator, kind):
                    return node.operator
        return None


def served_models(topology: Topology) -> list[str]:
    """The served models (Triton's model names) the topology's operators call, as their `model_name` says."""
    names = (
        getattr(getattr(node.operator, "config", None), "model_name", None)
        for stage in topology.stages.values()
        for node in stage.root.walk()
    )
    return sorted({name for name in names if isinstance(name, str) and name})


def _line_index(text: str) -> dict[Path_, int]:
    """Map each YAML path to its 1-based line, so errors can point at the file."""
    index: dict[Path_, int] = {}

    def visit(node: yaml.Node, path: Path_) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = (*path, key_node.value)
                visit(value_node, key)
                index[key] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                visit(item, (*path, i))

    root = yaml.compose(text)
    if root is not None:
        visit(root, ())
    return index


def _place(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Compiler:
    def __init__(self, file: str, lines: dict[Path_, int]) -> None:
        self.file, self.lines = file, lines
        self.issues: list[TopologyIssue] = []
        self.records = record_types()

    def issue(self, path: Path_, message: str) -> None:
        line = None
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                line = self.lines[path[:cut]]
                break
        self.issues.append(TopologyIssue(self.file, line, _place(path), message))

    def record(self, path: Path_, name: str | None) -> type[Record] | None:
        if name is None:
            return None
        if name not in self.records:
            self.issue(path, f"unknown record type {name!r}")
            return None
        return self.records[name]

    def compile(self, spec: TopologySpec) -> dict[str, Stage]:
        for name, topic in spec.topics.items():
            if topic.partitions is None:
                self.issue(("topics", name), "topic has no partition count (add `partitions: N`)")
            self.record(("topics", name, "record"), topic.record)
        for name, table in spec.tables.items():
            self.record(("tables", name, "record"), table.record)
            if table.topic is not None:
                mirrored = spec.topics.get(table.topic)
                if mirrored is None:
                    self.issue(("tables", name, "topic"), f"unknown topic {table.topic!r}")
                elif table.record is None or mirrored.record != table.record:
                    self.issue(
                        ("tables", name, "record"),
                        f"a table mirroring {table.topic!r} holds its records: set `record: {mirrored.record}`",
                    )
        dlq = spec.topics.get(spec.dead_letter_topic)
        if dlq is None or dlq.record != "DeadLetter":
            self.issue(
                ("dead_letter_topic",), f"{spec.dead_letter_topic!r} must be a topic carrying DeadLetter records"
            )

        stages: dict[str, Stage] = {}
        for name, stage_spec in spec.stages.items():
            stage = self.stage(spec, name, stage_spec)
            if stage is not None:
                stages[name] = stage
        self.check_cycles(spec, stages)
        return stages

    def stage(self, spec: TopologySpec, name: str, stage_spec: StageSpec) -> Stage | None:
        base: Path_ = ("stages", name)
        source = spec.topics.get(stage_spec.source)
        if source is None:
            self.issue((*base, "source"), f"unknown topic {stage_spec.source!r}")
        for i, table in enumerate(stage_spec.tables):
            if table not in spec.tables:
                self.issue((*base, "tables", i), f"unknown table {table!r} (declare it under `tables:`)")
        source_type = self.record((), source.record) if source else None
        sinks: list[str] = []
        root = self.chain(spec, stage_spec.operators, (*base, "operators"), source_type, sinks)
        if root is None:
            return None
        return Stage(
            name,
            stage_spec.source,
            stage_spec.tables,
            stage_spec.max_in_flight,
            stage_spec.operator_timeout_s,
            root,
            sorted(set(sinks)),
        )

    def chain(
        self, spec: TopologySpec, entries: Any, path: Path_, given: type[Record] | None, sinks: list[str]
    ) -> Node | None:
        if not isinstance(entries, list) or not entries:
            self.issue(path, "expected a non-empty list of operators")
            return None
        first: Node | None = None
        previous: Node | None = None
        previous_name = "the source topic"
        for i, entry in enumerate(entries):
            here = (*path, i)
            node = self.node(spec, entry, here, given, previous_name, sinks, last=i == len(entries) - 1)
            if node is None:
                return None
            if previous is not None:
                if previous.branches:
                    self.issue(here, f"nothing may follow {previous.operator.name!r}: it branches")
                    return None
                previous.next = node
            first = first or node
            previous, given, previous_name = node, node.operator.output_type, repr(node.operator.name)
        return first

    def node(
        self,
        spec: TopologySpec,
        entry: Any,
        path: Path_,
        given: type[Record] | None,
        previous_name: str,
        sinks: list[str],
        last: bool,
    ) -> Node | None:
        if isinstance(entry, str):
            name, options = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, options = next(iter(entry.items()))
            options = options or {}
            path = (*path, name)
        else:
            self.issue(path, "an operator entry is a name, or a one-key mapping `name: {config: ..., branches: ...}`")
            return None
        if not isinstance(options, dict) or set(options) - {"config", "branches"}:
            self.issue(path, "operator options are `config:` and `branches:` only")
            return None
        try:
            cls = resolve(name)
        except UnknownOperator as exc:
            self.issue(path, str(exc))
            return None
        if given is not None and not issubclass(given, cls.input_type):
            self.issue(
                path,
                f"{name!r} takes {cls.input_type.__name__} but {previous_name} gives {given.__name__}",
            )
            return None
        try:
            config = cls.Config.model_validate(options.get("config") or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            self.issue((*path, "config"), f"{name!r} config: {loc}: {first['msg']}")
            return None
        node = Node(operator=cls(config), place=_place(path))
        branches = options.get("branches") or {}
        if cls.branches or branches:
            if not cls.branches:
                self.issue((*path, "branches"), f"{name!r} does not branch")
                return None
            if not isinstance(branches, dict):
                self.issue((*path, "branches"), "expected a mapping of branch label to operators")
                return None
            for label in branches:
                if label not in cls.branches:
                    self.issue(
                        (*path, "branches", label),
                        f"{name!r} has no branch {label!r} (it has {', '.join(cls.branches)})",
                    )
            missing = [label for label in cls.branches if label not in branches]
            if missing:
                self.issue(path, f"{name!r} branch(es) not wired: {', '.join(missing)}")
            for label, entries in branches.items():
                if label in cls.branches:
                    child = self.chain(spec, entries, (*path, "branches", label), cls.output_type, sinks)
                    if child is not None:
                        node.branches[label] = child
        elif last:
            self.sinks_of(spec, cls, path, sinks)
        return node

    def sinks_of(self, spec: TopologySpec, cls: type[Operator], path: Path_, sinks: list[str]) -> None:
        produced = list(cls.emits) if cls.output_type is Emitted else [cls.output_type]
        if cls.output_type is Emitted and not produced:
            self.issue(path, f"{cls.name!r} returns Emitted but declares no `emits`")
        for record_type in produced:
            topic = next((n for n, t in spec.topics.items() if t.record == record_type.__name__), None)
            if topic is None:
                self.issue(path, f"{cls.name!r} ends the chain with {record_type.__name__} but no topic carries it")
            else:
                sinks.append(topic)

    def check_cycles(self, spec: TopologySpec, stages: dict[str, Stage]) -> None:
        consumers: dict[str, list[Stage]] = {}
        for stage in stages.values():
            consumers.setdefault(stage.source, []).append(stage)

        def visit(stage: Stage, trail: list[str]) -> bool:
            for topic in stage.sinks:
                for consumer in consumers.get(topic, []):
                    if consumer.name in trail:
                        loop = " -> ".join([*trail[trail.index(consumer.name) :], consumer.name])
                        self.issue(("stages", consumer.name), f"cycle between stages: {loop}")
                        return True
                    if visit(consumer, [*trail, consumer.name]):
                        return True
            return False

        for stage in stages.values():
            if visit(stage, [stage.name]):
                return


def load_topology(path: str | Path) -> Topology:
    """Parse and validate the file; raise TopologyInvalid listing every problem found."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyInvalid([TopologyIssue(file, None, "file", f"cannot read: {exc.strerror}")]) from None
    try:
        lines = _line_index(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise TopologyInvalid([TopologyIssue(file, line, "yaml", str(getattr(exc, "problem", exc)))]) from None
    compiler = _Compiler(file, lines)
    try:
        spec = TopologySpec.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            compiler.issue(tuple(err["loc"]), err["msg"])
        raise TopologyInvalid(compiler.issues) from None
    stages = compiler.compile(spec)
    if compiler.issues:
        raise TopologyInvalid(compiler.issues)
    return Topology(spec=spec, stages=stages, file=file)


def render_text(topology: Topology) -> str:
    """The graph as indented text: topics, then each stage's operators with their record types."""
    spec = topology.spec
    lines = ["topics:"]
    for name, topic in spec.topics.items():
        lines.append(f"  {name:<16} {topic.partitions} partitions  {topic.record}")
    for stage in topology.stages.values():
        tables = f"  tables: {', '.join(stage.tables)}" if stage.tables else ""
        lines.append(f"stage {stage.name}: {stage.source} -> {', '.join(stage.sinks)}{tables}")
        _render_chain(stage.root, lines, "  ")
    return "\n".join(lines)


def _render_chain(node: Node | None, lines: list[str], indent: str) -> None:
    while node is not None:
        op = node.operator
        lines.append(f"{indent}{op.name}: {op.input_type.__name__} -> {op.output_type.__name__}")
        for label, child in node.branches.items():
            lines.append(f"{indent}  [{label}]")
            _render_chain(child, lines, indent + "    ")
        node = node.next


def render_mermaid(topology: Topology) -> str:
    """The graph as a Mermaid flowchart, for READMEs and wikis that render it."""
    out = ["flowchart LR"]
    ids: dict[int, str] = {}

    def nid(node: Node, stage: str) -> str:
        if id(node) not in ids:
            ids[id(node)] = f"{stage}_{node.operator.name}_{len(ids)}"
            out.append(f"    {ids[id(node)]}[{node.operator.name}]")
        return ids[id(node)]

    def topic_id(name: str) -> str:
        return "t_" + name.replace(".", "_").replace("-", "_")

    for name in topology.spec.topics:
        out.append(f"    {topic_id(name)}[({name})]")
    for stage in topology.stages.values():
        out.append(f"    subgraph {stage.name}")
        edges: list[str] = []
        _mermaid_edges(stage.root, lambda node, name=stage.name: nid(node, name), edges)
        out.append("    end")
        out.extend(edges)
        out.append(f"    {topic_id(stage.source)} --> {ids[id(stage.root)]}")
        for node in stage.root.walk():
            if not node.next and not node.branches:
                op = node.operator
                produced = list(op.emits) if op.output_type is Emitted else [op.output_type]
                for record_type in produced:
                    topic = topology.topic_for(record_type)
                    if topic:
                        out.append(f"    {ids[id(node)]} --> {topic_id(topic)}")
    return "\n".join(out)


def _mermaid_edges(node: Node, nid: Callable[[Node], str], edges: list[str]) -> None:
    here = nid(node)
    if node.next:
        edges.append(f"    {here} --> {nid(node.next)}")
        _mermaid_edges(node.next, nid, edges)
    for label, child in node.branches.items():
        edges.append(f"    {here} -->|{label}| {nid(child)}")
        _mermaid_edges(child, nid, edges)
