"""The operator contract: a light constructor, an explicit warm-up, and an async `run`.

A data engineer adds an operator by writing one module in `operators/` holding one subclass of
`Operator`, then naming it in `topology.yaml`. The runtime validates each entry's `config`
against the operator's `Config` model, calls `warm_up` once before the first record, and then
`run` per record. `run` returns the operator's `output_type` (or `Emitted` at the end of a
chain), or None to drop the record on purpose (a duplicate, say). Raising sends the record to
the dead-letter topic with the operator's name and the error; the stream goes on.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from operators.protocols import OperatorContext
from schemas import Record

In = TypeVar("In", bound=Record)
Out = TypeVar("Out", bound=Record)


class OperatorConfig(BaseModel):
    """Per-operator settings from topology.yaml; subclasses add fields."""

    model_config = ConfigDict(extra="forbid")


class Operator(Generic[In, Out]):
    name: ClassVar[str]
    input_type: ClassVar[type[Record]]
    output_type: ClassVar[type[Record]]
    Config: ClassVar[type[OperatorConfig]] = OperatorConfig
    branches: ClassVar[tuple[str, ...]] = ()
    """Labels of the paths this operator may choose, read from the output's `branch`-carrying field."""
    emits: ClassVar[tuple[type[Record], ...]] = ()
    """For operators that end a chain with `Emitted`: the record types they may emit."""

    def __init__(self, config: OperatorConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def warm_up(self, ctx: OperatorContext) -> None:
        """Load models or templates once, before the first record. Keep `__init__` light."""

    def choose_branch(self, output: Out) -> str:
        """The branch label this output takes; only called when `branches` is set."""
        raise NotImplementedError(f"{self.name} declares branches but does not choose one")

    async def run(self, record: In, ctx: OperatorContext) -> Out | None:
        raise NotImplementedError
