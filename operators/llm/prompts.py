"""Prompts are versioned data files (`operators/llm/prompts/<name>.v<N>.yaml`), rendered with `$name` fields.

Every text a customer, an article or a tool wrote enters a prompt through `untrusted()`: inside a labelled
`<untrusted source=...>` block whose content cannot close the block (angle brackets become look-alikes),
and the system message says such blocks are data, never instructions. That does not make a model obey;
it makes the prompt say what is what. What a model may *do* is decided by deterministic code afterwards
(`authorize`, `guard`), whatever it was told.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

__all__ = ["PROMPTS_DIR", "Prompt", "load_prompt", "untrusted"]

PROMPTS_DIR = Path(__file__).parent / "prompts"
_NEUTRAL = str.maketrans({"<": "‹", ">": "›"})


def untrusted(source: str, text: str) -> str:
    """`text` as labelled data: it cannot end its block or open a new one."""
    return f'<untrusted source="{source}">\n{text.translate(_NEUTRAL)}\n</untrusted>'


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    system: str
    user: str

    @property
    def id(self) -> str:
        return f"{self.name}.v{self.version}"

    def render(self, **values: str) -> tuple[dict[str, str], ...]:
        """The chat messages; a field the file uses and the caller did not give raises KeyError."""
        return (
            {"role": "system", "content": string.Template(self.system).substitute(values).strip()},
            {"role": "user", "content": string.Template(self.user).substitute(values).strip()},
        )


@cache
def load_prompt(prompt_id: str, directory: Path = PROMPTS_DIR) -> Prompt:
    """`compose.v1` -> `prompts/compose.v1.yaml`; the file's own name and version must agree with its id."""
    path = directory / f"{prompt_id}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise FileNotFoundError(f"no prompt {prompt_id!r} in {directory}; known: {known}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    prompt = Prompt(name=data["name"], version=int(data["version"]), system=data["system"], user=data["user"])
    if prompt.id != prompt_id:
        raise ValueError(f"{path} declares {prompt.id}, not {prompt_id}")
    return prompt
