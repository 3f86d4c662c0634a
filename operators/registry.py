"""Find operators by the names topology.yaml uses."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from operators.base import Operator

PACKAGE_DIR = Path(__file__).parent


class UnknownOperator(LookupError):
    pass


def _operator_in(module_name: str) -> type[Operator] | None:
    module = importlib.import_module(module_name)
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Operator)
        and obj is not Operator
        and obj.__module__ == module.__name__
    ]
    return found[0] if len(found) == 1 else None


def builtin_names() -> list[str]:
    """Modules in `operators/` that define exactly one operator (helpers start with `_`)."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(PACKAGE_DIR)])
        if not info.name.startswith("_") and info.name not in {"base", "protocols", "registry"}
    )


def resolve(name: str) -> type[Operator]:
    """`normalize` names `operators/normalize.py`; `package.module:Class` names any importable operator."""
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise UnknownOperator(f"cannot import {name!r}: {exc}") from None
        if not (inspect.isclass(cls) and issubclass(cls, Operator)):
            raise UnknownOperator(f"{name!r} is not an Operator subclass")
        return cls
    if name not in builtin_names():
        raise UnknownOperator(f"unknown operator {name!r} (known: {', '.join(builtin_names())})")
    cls = _operator_in(f"operators.{name}")
    if cls is None:
        raise UnknownOperator(f"operators/{name}.py must define exactly one Operator subclass")
    return cls
