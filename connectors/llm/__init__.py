"""The language-model layer's connector: OpenAI-compatible endpoints as named tiers behind one gateway.

`LlmGateway` takes the tiers (`TierSpec`: endpoint, model, key, timeouts, token budget, prices) and
answers `ChatRequest`s with a `Completion`, trying tiers in the order the caller names and returning
None when none answered. `LocalModelServer` runs llama.cpp's OpenAI-compatible server on a GGUF file
that a package installed (the tests' real server; `supportflow llm serve` for a laptop).
"""

from connectors.llm.client import LlmCallError
from connectors.llm.gateway import LlmGateway
from connectors.llm.local import LocalModelServer, installed_gguf
from connectors.llm.messages import ChatRequest, Completion, TierFailure, TokenSink, ToolCall
from connectors.llm.tiers import TierSpec

__all__ = [
    "ChatRequest",
    "Completion",
    "LlmCallError",
    "LlmGateway",
    "LocalModelServer",
    "TierFailure",
    "TierSpec",
    "TokenSink",
    "ToolCall",
    "installed_gguf",
]
