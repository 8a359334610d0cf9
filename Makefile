# Bootstraps everything on a fresh machine: `make test`, `make demo`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: test test-slow demo venv data bench clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

# Debian's Fashion-MNIST; skipped quietly where apt-get is not usable.
data:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
		|| echo "note: could not install dataset-fashion-mnist; tests that need it will be skipped"; \
	fi

test: venv data
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: venv data
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow $(PYTEST_ARGS)

demo: venv data
	$(PY) -m hf_ssl.demo

bench: venv
	for script in inference train_step views roofline scaling; do \
		HF_HUB_OFFLINE=1 $(PY) benchmarks/$$script.py || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info
