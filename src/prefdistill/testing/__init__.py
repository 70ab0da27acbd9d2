"""Fixtures shared by the tests and the benchmark scripts: the rows and parameters that make every method's loss
active on the tiny models, a deterministic judge, and a fault-injecting HTTP proxy.

    from prefdistill.testing import PARAMS, ROWS, WordCountJudge     # prefdistill.testing.methods
    from prefdistill.testing import FAULTS, FaultProxy               # prefdistill.testing.servers

Nothing in the library imports this package; it may import any of it.
"""
from prefdistill.testing.methods import PARAMS, ROWS, WordCountJudge
from prefdistill.testing.servers import FAULTS, FaultProxy, Served, prompt_of, send_json, smollm2_gguf

__all__ = ["FAULTS", "PARAMS", "ROWS", "FaultProxy", "Served", "WordCountJudge", "prompt_of", "send_json", "smollm2_gguf"]
