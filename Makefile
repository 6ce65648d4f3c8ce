# `make demo` and `make test` work on a fresh offline machine: each creates .venv and
# installs what it needs when missing. torch==2.13.0 comes first: it is the CPU build on
# this disk; a looser pin would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: demo test lint install clean results results-mrl

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,eval,pg,train,chroma,qdrant,server,ray,onnx]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mrlkit demo

# ruff, then mypy --strict on all of src/ (mypy's settings in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy --strict src/mrlkit

# two workers (pytest-xdist): most of the run is CLI subprocesses waiting on imports;
# loadgroup keeps tests that share one costly cache fill on one worker (xdist_group)
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

# docs/results: every table and plot of docs/evaluation.md, from the shared datasets
DATA := ../shared/datasets
RES  := docs/results
results: $(STAMP)
	$(BIN)/mrlkit eval retrieval $(DATA)/scifact --model all-MiniLM-L6-v2 \
	    --dims 32,64,128,192,256,384 --precisions float32,float16,int8,binary \
	    --funnel 384:binary:100,384 --funnel 384:binary:200,384 \
	    --funnel 192:binary:200,384 --funnel 96:int8:200,384 \
	    --output $(RES)/scifact-minilm.json --csv $(RES)/scifact-minilm.csv --plot $(RES)/scifact-minilm.png
	$(BIN)/mrlkit eval similarity $(DATA)/stsb --model all-MiniLM-L6-v2 --dims 32,64,128,192,256,384 \
	    --output $(RES)/stsb-minilm.json --csv $(RES)/stsb-minilm.csv --plot $(RES)/stsb-minilm.png
	$(BIN)/mrlkit eval classification $(DATA)/banking77 --model all-MiniLM-L6-v2 --dims 32,64,128,192,256,384 \
	    --output $(RES)/banking77-minilm.json --csv $(RES)/banking77-minilm.csv --plot $(RES)/banking77-minilm.png
	$(BIN)/mrlkit advise $(DATA)/scifact --model all-MiniLM-L6-v2 --target 0.95 --output $(RES)/advise-scifact-minilm.json
	$(BIN)/mrlkit check-mrl all-MiniLM-L6-v2 --beir $(DATA)/scifact --output $(RES)/check-mrl-minilm.json

# docs/results/adapt-*: truncation vs PCA vs adaptor vs a MatryoshkaLoss fine-tune
# (trains ~15 min on 2 cores the first time; the model lands in models/, not in git)
MRL_MODEL := models/minilm-scifact-mrl
results-mrl: $(STAMP)
	test -f $(MRL_MODEL)/model.safetensors || $(BIN)/mrlkit train $(DATA)/scifact --output $(MRL_MODEL)
	$(BIN)/mrlkit eval adapt $(DATA)/scifact --trained minilm-scifact-mrl --dims 32,64,128,192,384 \
	    --output $(RES)/adapt-scifact.json --csv $(RES)/adapt-scifact.csv --plot $(RES)/adapt-scifact.png
	$(BIN)/mrlkit eval adapt $(DATA)/stsb --trained minilm-scifact-mrl --dims 32,64,128,192,384 \
	    --output $(RES)/adapt-stsb.json --csv $(RES)/adapt-stsb.csv --plot $(RES)/adapt-stsb.png
	$(BIN)/mrlkit check-mrl minilm-scifact-mrl --beir $(DATA)/scifact --output $(RES)/check-mrl-minilm-scifact-mrl.json

clean:
	rm -rf $(VENV) build src/*.egg-info
