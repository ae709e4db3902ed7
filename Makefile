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

.PHONY: venv course study test lab figures clean-venv

# The stamp depends on the project's dependency list and the course's pins, so editing either reinstalls.
# torch 2.14.1 on x86_64 is its CUDA build: a new .venv takes about 6.5 GB, so a disk with less
# fails half-way through pip; say so before starting (VENV_MIN_FREE_MB=0 skips the check).
VENV_MIN_FREE_MB ?= 6600
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || { free_mb=$$(df -Pm . | awk 'NR==2 {print $$4}'); \
		if [ "$$free_mb" -lt $(VENV_MIN_FREE_MB) ]; then \
			echo "make: $(VENV) needs about $(VENV_MIN_FREE_MB) MB of free disk (torch's CUDA build); $$free_mb MB free in $$(pwd)"; \
			exit 1; fi; \
		$(PYTHON) -m venv $(VENV); }
	@echo "Installing maxsq and its dependencies into $(VENV) (a few minutes the first time; log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install -c constraints.txt -e '.[course,dev]' > $(VENV)/install.log 2>&1 \
		|| { tail -n 40 $(VENV)/install.log; echo "pip install failed; full log: $(VENV)/install.log"; exit 1; }
	@$(BIN)/python -m ipykernel install --prefix $(VENV) --name maxsq --display-name "maxsq (.venv)" >> $(VENV)/install.log 2>&1
	@touch $@
	@echo "Environment ready: $(VENV)"

venv: $(VENV)/.installed

course: venv
	$(BIN)/maxsq course --profile $(PROFILE) --seeds $(SEEDS)

# The committed figures/ and figures/results.json: 3 seeds, the λ sweep, no notebooks
# (about an hour on a 2-core machine).
STUDY_SEEDS ?= 3
study: venv
	$(BIN)/maxsq course --profile $(PROFILE) --seeds $(STUDY_SEEDS) --study

test: venv
	$(BIN)/python -m pytest

# JupyterLab on the course with the project's kernel: JUPYTER_PATH puts this venv's `python3`
# kernelspec (the notebooks' kernel) before any user-wide one; the token is made here so the URL
# printed below is the one to open. `make lab LAB_PORT=8890` if 8888 is taken.
LAB_PORT ?= 8888
lab: venv
	@token=$$($(BIN)/python -c 'import secrets; print(secrets.token_hex(24))'); \
	echo "JupyterLab: notebooks/ with the project's kernel (python3 = $(abspath $(BIN))/python)"; \
	echo "Open http://127.0.0.1:$(LAB_PORT)/lab?token=$$token   (Ctrl-C twice to stop)"; \
	JUPYTER_TOKEN=$$token JUPYTER_PATH="$(abspath $(VENV))/share/jupyter" PATH="$(abspath $(BIN)):$$PATH" \
	$(BIN)/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 --port=$(LAB_PORT) \
		--ServerApp.port_retries=0 --MappingKernelManager.default_kernel_name=python3 \
		$(if $(filter 0,$(shell id -u)),--allow-root)

figures: venv
	$(BIN)/maxsq figures --profile $(PROFILE) --out figures

clean-venv:
	rm -rf $(VENV)
