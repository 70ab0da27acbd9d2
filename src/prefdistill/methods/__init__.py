"""Training methods, registered by decorator. Importing this package registers them all.

    from prefdistill.methods import METHODS
    print(sorted(METHODS))
"""
from prefdistill.methods.registry import (METHODS, MethodSpec, ResolvedMethod, get_method, method_params, register, resolve,
                                          resolve_method, validate_method, warmup_method)

# One import line per method file: adding a method never edits the training loop. (Registration order is the
# order of a family in the papers' orderings: `registry.paper_orderings`.)
from prefdistill.methods import sft as _sft  # noqa: E402,F401
from prefdistill.methods import plad as _plad  # noqa: E402,F401
from prefdistill.methods import kd as _kd  # noqa: E402,F401
from prefdistill.methods import seqkd as _seqkd  # noqa: E402,F401
from prefdistill.methods import fdistill as _fdistill  # noqa: E402,F401
from prefdistill.methods import minillm as _minillm  # noqa: E402,F401
from prefdistill.methods import gkd as _gkd  # noqa: E402,F401
from prefdistill.methods import distillm as _distillm  # noqa: E402,F401
from prefdistill.methods import dpkd as _dpkd  # noqa: E402,F401
from prefdistill.methods import wind as _wind  # noqa: E402,F401
from prefdistill.methods import sppo as _sppo  # noqa: E402,F401
from prefdistill.methods import bond as _bond  # noqa: E402,F401
from prefdistill.methods import jbond as _jbond  # noqa: E402,F401

__all__ = ["METHODS", "MethodSpec", "ResolvedMethod", "get_method", "method_params", "register", "resolve", "resolve_method",
           "validate_method", "warmup_method"]
