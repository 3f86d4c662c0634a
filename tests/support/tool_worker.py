"""A stand-in for the worker's `execute` step, as its own process: one write through the tool registry.

`python -m tests.support.tool_worker TOOL CUSTOMER KEY ARGUMENTS_JSON` builds the registry from the
environment's settings exactly as the worker does (`ToolRegistry.from_settings`), makes the call,
prints "called" and then waits to be killed, so a test can kill it right after a write.
"""

from __future__ import annotations

import asyncio
import json
import sys

from connectors.backends.registry import ToolRegistry
from connectors.protocols import ToolCall
from pipelines.runtime.settings import Settings


async def main(tool_name: str, customer_id: str, key: str, arguments: dict[str, object]) -> None:
    registry = ToolRegistry.from_settings(Settings())
    tool = await registry.get(tool_name)
    assert tool is not None, f"no tool {tool_name}"
    await tool.call(ToolCall(tool_name, arguments, customer_id, key))
    print("called", flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))
