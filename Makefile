# Two entry points for a fresh machine: `make course` and `make test`.
# Both create (or reuse) the local virtual environment .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
SEEDS ?= 1
# libgomp's spin-waiting made training steps several times slower on a busy 2-core machine.
export OMP_WAIT_POLICY := PASSIVE
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv course test lab figures clean-venv

# The stamp depends on the project's dependency list, so editing pyproject.toml reinstalls.
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing maxsq and its dependencies into $(VENV) (a few minutes the first time; log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install -e '.[course,dev]' > $(VENV)/install.log 2>&1 \
		|| { tail -n 40 $(VENV)/install.log; echo "pip install failed; full log: $(VENV)/install.log"; exit 1; }
	@$(BIN)/python -m ipykernel install --prefix $(VENV) --name maxsq --display-name "maxsq (.venv)" >> $(VENV)/install.log 2>&1
	@touch $@
	@echo "Environment ready: $(VENV)"

venv: $(VENV)/.installed

course: venv
	$(BIN)/maxsq course --profile $(PROFILE) --seeds $(SEEDS)

test: venv
	$(BIN)/python -m pytest

lab: venv
	$(BIN)/jupyter lab --notebook-dir=notebooks

figures: venv
	$(BIN)/maxsq figures --profile $(PROFILE)

clean-venv:
	rm -rf $(VENV)
