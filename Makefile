# make setup / make demo / make test
PY ?= python3

setup:
	bash scripts/setup.sh --demo --dev

demo: setup
	HF_HUB_OFFLINE=1 prefdistill demo

test:
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

.PHONY: setup demo test
