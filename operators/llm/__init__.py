"""What the LLM operators (`compose`, `llm_plan`) share: versioned prompts and how untrusted text enters them."""

from operators.llm.prompts import Prompt, load_prompt, untrusted

__all__ = ["Prompt", "load_prompt", "untrusted"]
