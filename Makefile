# rlcamp: the two commands a fresh clone needs (see README).
.PHONY: setup run test test-fast test-slow

setup:
	bash scripts/setup.sh

# set up + run the main job on its embedded default
run: setup
	bash scripts/run_main_job.sh

# set up + run the tests (default tier, then the slow tier while time allows); CI runs this
test:
	bash scripts/test.sh

test-fast: setup
	.venv/bin/python -m pytest

test-slow: setup
	.venv/bin/python -m pytest -m slow
