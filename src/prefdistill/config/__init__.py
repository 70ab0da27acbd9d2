"""Run and bench configs: the typed schema (`schema`), its field rules (`typed`), reading YAML (`files`) and the checks that
span fields (`checks`, with `load_config`).

`from prefdistill.config import RunConfig` keeps working: the schema is re-exported here.
"""
from prefdistill.config.schema import *  # noqa: F401,F403  (the schema's public names)
