# Two commands: `make run` serves the demo repository, `make test` runs the whole suite.
# Both create .venv and install what they need first: `make run` only the core dependencies (`pip install -e .`,
# what serving the demo needs), `make test` the test extra on top (PyTorch, TensorFlow, tritonclient[all], ...).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-test
export ORT_DISABLE_TELEMETRY := 1
# The security scanner's own venv (see `scan`).
CHECKOV_VENV := build/checkov-venv

.PHONY: venv models face-models run test scan fuzz proto readme ship-face-model bench bench-quick bench-tcp bench-kserve bench-streams bench-faces bench-bot clean

venv: $(RUN_STAMP)

# Serving: the core dependencies only.
$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

# Tests, benchmarks and tools: the test extra on top.
$(STAMP): $(RUN_STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

models: $(RUN_STAMP)
	$(BIN)/python -m twinfer.demo_models models

# The MediaPipe face .tflite files and licence from the pinned wheel into build/face_models (make models does this too).
face-models: $(RUN_STAMP)
	$(BIN)/python tools/fetch_face_models.py

run: models
	$(BIN)/twinfer serve --model-repository models --insecure-dev $(ARGS)

$(BIN)/helm: $(STAMP)
	$(BIN)/python tools/get_helm.py

test: $(STAMP) $(BIN)/helm $(CHECKOV_VENV)/bin/checkov
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The security policy scan (checkov) of the rendered Helm manifests and the Dockerfile, beside the tests'
# schema checks. checkov brings hundreds of MB of cloud SDKs and pins its own versions of common packages, so it
# lives in a venv of its own (build/checkov-venv), not in .venv; tests/unit/test_manifests.py finds it there.
# `make test` installs it too (~1 min, ~300 MB, once), so the scan is part of the suite (#18).
$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet "checkov==3.3.30"  # pinned: its policies decide what the tests pass

scan: $(STAMP) $(BIN)/helm $(CHECKOV_VENV)/bin/checkov
	$(BIN)/python -m pytest tests/unit/test_manifests.py -q

# The fuzzing suite at length (#14): every parser property with 20,000 examples, then the live mutation fuzzer
# (a million mutated inputs over TCP, UDP, HTTP and gRPC against a real server beside a bystander; ~5 min).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/fuzz -q -p no:cacheprovider
	$(BIN)/python -m tests.fuzz.live --inputs 1000000 --json fuzz-results.json

proto: $(STAMP)
	$(BIN)/python tools/gen_proto.py

readme: $(STAMP)
	$(BIN)/python tools/readme_config.py

# Retrain the shipped face model (src/twinfer/data/face_blendshapes) with the recorded settings.
ship-face-model: $(STAMP)
	$(BIN)/python tools/ship_face_model.py

# Side by side with Triton, MLServer, LitServe and raw ONNX Runtime (peers in .peers/); bench/results/<date>.md
bench: $(STAMP)
	$(BIN)/python -m bench all

bench-quick: $(STAMP)
	$(BIN)/python -m bench all --quick

bench-kserve: $(STAMP)
	$(BIN)/python bench/kserve.py

bench-streams: $(STAMP)
	$(BIN)/python bench/streams.py

# The real-face tracker vs MediaPipe's face mesh (in .peers/mediapipe), same frames, same run (~2 min)
bench-faces: $(STAMP)
	$(BIN)/python bench/faces.py

bench-bot: $(STAMP)
	$(BIN)/python bench/bot_vs_locust.py

bench-tcp: $(STAMP)
	$(BIN)/python bench/tcp_tiny.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
