# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv if missing, installs the package, runs the main job on the sim arm
#   make test   the same set-up, the static gate (make lint) first, then the test suite (in a
#               private network namespace if possible)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.py | md5sum | cut -c1-12)
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint setup bench ros-build-tools osmesa clean

setup: $(STAMP)

$(STAMP):
	@echo "== set-up: virtual environment $(VENV) (torch 2.13.0 CPU first, then mbrl_ros[ros,dev]) =="
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	@$(PY) -m pip install -q -e ".[ros,dev]"
	@rm -f $(VENV)/.installed-* && touch $@
	@echo "== set-up done =="

demo: setup
	$(VENV)/bin/mbrl-ros demo $(DEMO_ARGS)

# colcon (Debian) for the ROS 2 build check; installed when missing and apt is usable as root.
ros-build-tools:
	@command -v colcon >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { echo "== installing colcon + python3-colcon-ros (apt) for the ROS 2 build test =="; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq colcon python3-colcon-ros) >/dev/null; } \
	  || echo "== colcon not available: the colcon build test will skip =="; }

# OSMesa (software OpenGL) for the simulator's camera on a machine without a display (MUJOCO_GL:
# mbrl_ros.simulator.camera uses osmesa when no DISPLAY is set); installed when missing and apt is
# usable as root, otherwise the camera tests skip and say why.
osmesa:
	@ldconfig -p 2>/dev/null | grep -q libOSMesa || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { echo "== installing libosmesa6 (apt) for offscreen camera rendering =="; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libosmesa6) >/dev/null; } \
	  || echo "== libosmesa6 not available: camera rendering (arm_sim camera:=true) and its tests skip =="; }

# The static gate: ruff lint, ruff format --check, mypy (settings: ruff.toml, setup.cfg [mypy]).
# Clean on the whole tree; `make test` runs it first and stops on a finding (mypy's incremental
# cache .mypy_cache/ is git-ignored, so a fresh clone starts cold).
LINT_PATHS := src tests benchmarks launch
lint: setup
	@echo "== lint: ruff check, ruff format --check, mypy =="
	@$(VENV)/bin/ruff check $(LINT_PATHS)
	@$(VENV)/bin/ruff format --check $(LINT_PATHS)
	@$(VENV)/bin/mypy

test: setup ros-build-tools osmesa
	@$(MAKE) --no-print-directory lint
	@echo "== tests: pytest in tools/isolated =="
	@tools/isolated $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing" >&2; exit 1; fi; exit $$rc

# The fast tier: core tests that need neither rclpy nor DDS nor node processes (see README,
# "Tests and the network"); collecting it never imports rclpy.
test-fast: setup
	@$(PY) -m pytest -m "not ros and not slow" $(PYTEST_ARGS)

bench: setup osmesa
	tools/isolated $(PY) benchmarks/run_all.py

clean:
	rm -rf build install log .pytest_cache
