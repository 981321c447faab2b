# The GAN cookbook. `make install` once, then `make test`, `make train-<chapter>`, `make tensorboard`.
# Every target uses .venv; PYTHON=/path/to/python uses your own environment instead.
VENV := .venv
PYTHON ?= $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 6006
ARGS ?=

.PHONY: help install test train-vanilla-gan train-3d-gan train-age-cgan train-anime-dcgan train-srgan train-pgan \
        bench bench-modes tensorboard clean

help:
	@echo "make install            create .venv and install everything (TensorFlow, Keras 3, ...)"
	@echo "make test               run the test suite (CPU only)"
	@echo "make train-vanilla-gan  chapter 1: a GAN that draws MNIST digits (ARGS='--epochs 50' to change flags)"
	@echo "make train-3d-gan       chapter 2: a 3D-GAN that makes voxel chairs (ARGS='--category airplane')"
	@echo "make train-age-cgan     chapter 3: Age-cGAN, gan -> encoder -> optimize stages, then a face at six ages"
	@echo "make train-anime-dcgan  chapter 4: a DCGAN that draws cartoon faces (ARGS='--arch book' for the book's pair)"
	@echo "make train-srgan        chapter 5: SRGAN 4x super-resolution of photos (SRResNet pretrain + SRGAN)"
	@echo "make train-pgan         progressive GAN growing from 4x4 with fade-ins"
	@echo "make bench              speed vs the book's code: train steps, loaders, SR inference (bench/results.json)"
	@echo "make bench-modes        2-D mode-coverage benchmark (8-ring, 25-grid) of the stabilisation flags"
	@echo "make tensorboard        watch every run under runs/ on http://$(HOST):$(PORT)"
	@echo "make clean              delete runs/ and caches (keeps .venv)"

install:
	@if [ "$(PYTHON)" = "$(VENV)/bin/python" ] && [ ! -x "$(VENV)/bin/python" ]; then python3 -m venv $(VENV); fi
	$(PYTHON) -m pip install -r requirements.txt

# CUDA_VISIBLE_DEVICES= keeps the tests on the CPU. pytest exits 5 when it collected no test: make fails then too.
# Two pytest workers (pytest-xdist), each test file on one worker so that its shared runs are trained once: most of
# a test is Python (imports, tracing, process starts), which one core does alone (about 12 min instead of 16 on
# 2 cores). TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
test:
	CUDA_VISIBLE_DEVICES= $(PYTHON) -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# A target's CPU-sized flags are left out when ARGS resumes a run (--resume): the run's config.json has the flags it
# was trained with, and typed flags would win over them (e.g. --arch paper on a run made with the book's generator).
unless_resuming = $(if $(findstring --resume,$(ARGS)),,$(1))

train-vanilla-gan:
	$(PYTHON) chapters/vanilla_gan/main.py $(ARGS)

train-3d-gan:
	$(PYTHON) chapters/gan_3d/main.py $(ARGS)

# gan -> encoder -> optimize -> age on the embedded faces: the conditional DCGAN with a projection D and an
# auxiliary age loss (32 px drawn, 64 px out) and a width-0.5 book encoder, to fit a 2-core CPU (~10 min;
# chapters/age_cgan/README.md).
AGE_CGAN_CPU := --arch dcgan --width 0.5 --epochs 12 --steps-per-epoch 200 --batch-size 64 --encoder-steps 300 \
                --optimize-steps 40 --refine-steps 60
train-age-cgan:
	$(PYTHON) chapters/age_cgan/main.py --stage all $(call unless_resuming,$(AGE_CGAN_CPU)) $(ARGS)

# The DCGAN-paper pair at 32 px trains ~20x faster on a CPU than the book's pair (--arch book, the script's default);
# 32 epochs of it take 6-7 minutes on 2 cores (FID 7.8-8.3; 12 epochs: 12.5-12.9; chapters/anime_dcgan/README.md).
train-anime-dcgan:
	$(PYTHON) chapters/anime_dcgan/main.py $(call unless_resuming,--arch dcgan --filters 32 --epochs 32) $(ARGS)

# 48 px crops at batch 4 with the bicubic skip: ~1.2 s a step on 2 cores; it beats bicubic within minutes.
# The book's set-up (96 or 256 px crops, plain generator, the script's defaults) is a GPU job.
SRGAN_CPU := --arch paper --hr-size 48 --batch-size 4 --bicubic-skip --pretrain-epochs 16 --epochs 2
train-srgan:
	$(PYTHON) chapters/srgan/main.py $(call unless_resuming,$(SRGAN_CPU)) $(ARGS)

train-pgan:
	$(PYTHON) chapters/pgan/main.py $(ARGS)

# Speed against the book's code: ~15-20 min on 2 CPU cores; ARGS='--quick' smoke run, ARGS='--only steps'.
# GPUs are hidden because the budget and targets are a CPU's; on a GPU machine run python -m bench.bench.
bench:
	CUDA_VISIBLE_DEVICES= $(PYTHON) -m bench.bench $(ARGS)

# Sized for a CPU; ARGS='--quick' for a smoke test.
bench-modes:
	CUDA_VISIBLE_DEVICES= $(PYTHON) -m bench.modes $(ARGS)

tensorboard:
	@mkdir -p runs
	$(PYTHON) -m tensorboard.main --logdir runs --host $(HOST) --port $(PORT)

clean:
	rm -rf runs .pytest_cache
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
