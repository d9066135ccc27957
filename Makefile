# fewkit: every command sets itself up. `make demo` and `make test` work on a fresh clone.
# A GPU user picks another torch build, e.g.:  make install TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"
# The install stamp is named after TORCH, so changing TORCH reinstalls torch.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fewkit-installed-$(shell printf "%s" "$(TORCH)" | cksum | cut -d" " -f1)
NBDEV_WORKERS ?= 2
# stamps of another TORCH: reinstall torch when one is there
OTHER_TORCH = $(strip $(filter-out $(STAMP),$(wildcard $(VENV)/.fewkit-installed*)))

.PHONY: install demo test test-nbs test-py check-sync lint-imports lab bench readme clean-nbs docs docs-serve
.DEFAULT_GOAL := demo

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo ">> installing $(TORCH) and fewkit into $(VENV) (first time: ~2-3 minutes)"
	$(BIN)/python -m pip install -q --disable-pip-version-check $(if $(OTHER_TORCH),--force-reinstall --no-deps,) $(TORCH) 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import torch, deepspeed, transformers, torch_geometric, fewkit; print('>> installed: torch', torch.__version__, '| fewkit', fewkit.__version__)"
	@rm -f $(OTHER_TORCH)
	@touch $(STAMP)

install: $(STAMP)

demo: install            ## the main job on the embedded default data (no GPU, no network)
	$(BIN)/fewkit demo

test: install check-sync lint-imports test-nbs test-py   ## what CI runs

lint-imports: install    ## the layer contracts of pyproject.toml (import-linter)
	$(BIN)/lint-imports

check-sync: install      ## nbdev-export / nbdev-clean / README must change nothing
	PATH=$(abspath $(BIN)):$$PATH bash scripts/check_sync.sh

test-nbs: install
	cd nbs && PATH=$(abspath $(BIN)):$$PATH ../$(BIN)/nbdev-test --n-workers $(NBDEV_WORKERS) --timing

test-py: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lab: install             ## JupyterLab on the notebooks
	$(BIN)/jupyter lab --notebook-dir nbs $(if $(filter 0,$(shell id -u)),--allow-root,)

bench: install           ## every benchmark (slow): writes runs/bench/*.json and PNGs
	$(BIN)/fewkit bench all

docs: install            ## the docs site in _docs/: every notebook with its outputs + the API reference (offline, no quarto)
	$(BIN)/python scripts/docs.py --out _docs

DOCS_PORT ?= 8000
docs-serve: docs         ## serve _docs/ on http://127.0.0.1:$(DOCS_PORT) (this machine only)
	$(BIN)/python -m http.server --bind 127.0.0.1 --directory _docs $(DOCS_PORT)

readme: install          ## README.md from nbs/index.ipynb
	PATH=$(abspath $(BIN)):$$PATH bash scripts/readme.sh

clean-nbs: install       ## export + clean notebooks before a commit
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean && PATH=$(abspath $(BIN)):$$PATH bash scripts/readme.sh
