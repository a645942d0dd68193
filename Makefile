# Set-up and entry points. `make test` and `make demo` work on a fresh Debian machine:
# they create .venv, install a CPU build of torch first, then this package, and the
# system libraries that headless MuJoCo rendering needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 is a CPU build on the project's machines; set TORCH_SPEC and TORCH_INDEX
# elsewhere, e.g. TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
SYSTEM_PACKAGES := libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libosmesa6
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_OUT ?= demo_out

.PHONY: install system-deps test demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

system-deps:
	@missing=""; \
	for pkg in $(SYSTEM_PACKAGES); do \
		dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

install: system-deps $(VENV)/.installed

test: install
	$(PY) -m pytest

demo: install
	$(VENV)/bin/vla-distill quickstart --out $(DEMO_OUT) --preset demo

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
