"""python -m prefdistill ... (same as the `prefdistill` command)."""
import sys

from prefdistill.cli import main

sys.exit(main())
