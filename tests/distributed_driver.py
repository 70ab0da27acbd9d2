"""`prefdistill run CONFIG --stages distill` for each CONFIG, in one interpreter (one launch for many runs).

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_driver.py A.yaml B.yaml
"""
import sys

from prefdistill.cli import main

if __name__ == "__main__":
    for config in sys.argv[1:]:
        if main(["run", config, "--stages", "distill", "--allow-config-change"]) != 0:
            sys.exit(1)
