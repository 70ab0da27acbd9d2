"""Progress bars in the tqdm style: one bar per stage, the work inside it on the line below, cleared when done.

    with stage_bar("eval", total=4, unit="row") as bar:     # stays on screen
        for row in rows:
            generate(...)                                      # its own bar() sits one line lower and vanishes
            bar.update()

Every bar of the library goes through `bar()`, which places it at the current nesting depth:
a bar opened inside `stage_bar` is a nested one (leave=False). Library-internal bars of
transformers (weight loading) are switched off while a stage runs.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterable

from tqdm.auto import tqdm

_depth = [0]


def bar(iterable: Iterable | None = None, **kwargs) -> tqdm:
    """A tqdm bar at the current depth: a top-level bar stays when done, a nested one clears.

    Nested bars are drawn only on a terminal: in a log file every redraw of a second line would
    be a new line, so there only the stage bars (and log lines) appear.
    """
    depth = _depth[0]
    kwargs.setdefault("leave", depth == 0)
    if depth and not sys.stderr.isatty():
        kwargs["disable"] = True
    return tqdm(iterable, position=depth, dynamic_ncols=True, **kwargs)


@contextlib.contextmanager
def nested():
    """Bars opened inside the block sit one line lower and clear when done."""
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1


@contextlib.contextmanager
def stage_bar(desc: str, *, total: int, unit: str = "part", disable: bool = False):
    """One bar for a whole stage; the work inside it is nested. Quiets transformers' own bars meanwhile."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with bar(total=total, desc=desc, unit=unit, disable=disable) as outer, nested():
            yield outer
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
