"""The `Judge` interface, and the one check every judge's scores go through."""
from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Judge(Protocol):
    """Scores responses to prompts; higher is better.

    `score(prompts, responses)` returns one float per (prompt, response) pair, in order.
    Scores are only comparable between responses scored by the same judge.
    """

    name: str

    def score(self, prompts: list[str], responses: list[str]) -> list[float]: ...


def check_inputs(prompts: list[str], responses: list[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; they must pair up")


def check_scores(scores: Any, n_expected: int, judge_name: str) -> list[float]:
    """Turn a judge's output into `n_expected` finite floats, or say exactly what is wrong."""
    if isinstance(scores, (str, bytes)) or not hasattr(scores, "__iter__"):
        raise TypeError(f"judge {judge_name!r} must return a sequence of floats, got {type(scores).__name__}")
    out = []
    for i, s in enumerate(scores):
        try:
            value = float(s)
        except (TypeError, ValueError) as e:
            raise TypeError(f"judge {judge_name!r}: score at index {i} is not a number ({s!r})") from e
        if not math.isfinite(value):
            raise ValueError(f"judge {judge_name!r}: score at index {i} is not finite ({value})")
        out.append(value)
    if len(out) != n_expected:
        raise ValueError(f"judge {judge_name!r} returned {len(out)} scores for {n_expected} responses")
    return out
