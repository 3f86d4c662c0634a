"""Find operators by the names topology.yaml uses.

A built-in operator is the one `Operator` subclass of a module in `operators/`; its `name` is what
topology.yaml writes (normally the module's name: `operators/normalize.py` is `normalize`).
Helper modules (`_events.py`, `playbooks.py`) and the helper packages (`nlu/`, `policy/`) define
none and are skipped.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache
from pathlib import Path

from operators.base import Operator

__all__ = ["UnknownOperator", "builtin_names", "resolve"]

PACKAGE_DIR = Path(__file__).parent
_NOT_OPERATORS = frozenset({"base", "protocols", "registry", "playbooks"})


class UnknownOperator(LookupError):
    pass


def _operators_in(module_name: str) -> list[type[Operator]]:
    module = importlib.import_module(module_name)
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Operator)
        and obj is not Operator
        and obj.__module__ == module.__name__
    ]


@cache
def _builtins() -> dict[str, str]:
    """Operator name → module, for the modules of `operators/` that define exactly one operator."""
    found: dict[str, str] = {}
    for info in pkgutil.iter_modules([str(PACKAGE_DIR)]):
        if info.ispkg or info.name.startswith("_") or info.name in _NOT_OPERATORS:
            continue
        module_name = f"operators.{info.name}"
        classes = _operators_in(module_name)
        if len(classes) != 1:
            raise UnknownOperator(f"operators/{info.name}.py must define exactly one Operator subclass")
        found[classes[0].name] = module_name
    return found


def builtin_names() -> list[str]:
    """The names of the built-in operators, as topology.yaml writes them."""
    return sorted(_builtins())


def resolve(name: str) -> type[Operator]:
    """`normalize` names a built-in operator; `package.module:Class` names any importable operator."""
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise UnknownOperator(f"cannot import {name!r}: {exc}") from None
        if not (inspect.isclass(cls) and issubclass(cls, Operator)):
            raise UnknownOperator(f"{name!r} is not an Operator subclass")
        return cls
    builtins = _builtins()
    if name not in builtins:
        raise UnknownOperator(f"unknown operator {name!r} (known: {', '.join(sorted(builtins))})")
    return _operators_in(builtins[name])[0]
