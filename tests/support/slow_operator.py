"""An operator that sleeps for one customer only: proves a slow conversation stalls no other."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from operators.base import Operator, OperatorConfig
from operators.protocols import OperatorContext
from schemas import ContextTurn


class SleepConfig(OperatorConfig):
    customer_id: str
    seconds: float


class SleepForOneCustomer(Operator[ContextTurn, ContextTurn]):
    name = "sleep_for_one_customer"
    input_type = ContextTurn
    output_type = ContextTurn
    Config: ClassVar[type[OperatorConfig]] = SleepConfig

    async def run(self, record: ContextTurn, ctx: OperatorContext) -> ContextTurn:
        config: SleepConfig = self.config  # type: ignore[assignment]
        if record.message.customer_id == config.customer_id:
            await asyncio.sleep(config.seconds)
        return record
