"""Any Python function as a judge: `judge.callable: "my_package.rewards:score"`.

    def score(prompts: list[str], responses: list[str]) -> list[float]: ...

The function gets whole lists (so it can batch) and returns one finite float per
response; a list, tuple, numpy array or 1-d tensor all work.
"""
from __future__ import annotations

import importlib
import re
from typing import Callable, Sequence

from prefdistill.judges.base import check_inputs, check_scores

_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def resolve_callable(target: str) -> Callable:
    """"package.module:function" (or "module:Class.method") -> the object it names."""
    if not isinstance(target, str) or not _TARGET.match(target.strip()):
        raise ValueError(f"judge callable must look like 'package.module:function', got {target!r}")
    module_name, attr_path = target.strip().split(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"judge callable {target!r}: cannot import module {module_name!r}: {e}") from e
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise AttributeError(f"judge callable {target!r}: {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(obj):
        raise TypeError(f"judge callable {target!r} names a {type(obj).__name__!r} object, not a function")
    return obj


class CallableJudge:
    """Wraps `function(prompts, responses) -> sequence of floats`, given as "module:function" or directly."""

    def __init__(self, target: str | Callable[[list[str], list[str]], Sequence[float]], name: str | None = None):
        if isinstance(target, str):
            self.fn = resolve_callable(target)
            default_name = target.strip()
        elif callable(target):
            self.fn = target
            default_name = f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}"
        else:
            raise TypeError(f"CallableJudge needs a 'module:function' string or a callable, got {type(target).__name__}")
        self.name = name or default_name

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        check_inputs(prompts, responses)
        if not prompts:
            return []
        return check_scores(self.fn(list(prompts), list(responses)), len(prompts), self.name)

    def __repr__(self) -> str:
        return f"CallableJudge({self.name!r})"
