"""Errors every layer raises; a leaf module, so anything may import it."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


class TeacherGapError(RuntimeError):
    """The teacher is not clearly better than the SFT student: a bench on this pair would show nothing."""
