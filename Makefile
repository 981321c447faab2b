# The GAN cookbook. `make install` once, then `make test`, `make train-<chapter>`, `make tensorboard`.
# Every target uses .venv; PYTHON=/path/to/python uses your own environment instead.
VENV := .venv
PYTHON ?= $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 6006
ARGS ?=

.PHONY: help install test train-vanilla-gan tensorboard clean

help:
	@echo "make install            create .venv and install everything (TensorFlow, Keras 3, ...)"
	@echo "make test               run the test suite (CPU only)"
	@echo "make train-vanilla-gan  chapter 1: a GAN that draws MNIST digits (ARGS='--epochs 50' to change flags)"
	@echo "make tensorboard        watch every run under runs/ on http://$(HOST):$(PORT)"
	@echo "make clean              delete runs/ and caches (keeps .venv)"

install:
	@if [ "$(PYTHON)" = "$(VENV)/bin/python" ] && [ ! -x "$(VENV)/bin/python" ]; then python3 -m venv $(VENV); fi
	$(PYTHON) -m pip install -r requirements.txt

# CUDA_VISIBLE_DEVICES= keeps the tests on the CPU. pytest exits 5 when it collected no test: make fails then too.
test:
	CUDA_VISIBLE_DEVICES= $(PYTHON) -m pytest -q

train-vanilla-gan:
	$(PYTHON) chapters/vanilla_gan/main.py $(ARGS)

tensorboard:
	@mkdir -p runs
	$(PYTHON) -m tensorboard.main --logdir runs --host $(HOST) --port $(PORT)

clean:
	rm -rf runs .pytest_cache
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
