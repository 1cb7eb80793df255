# The two commands a fresh machine needs: `make demo` and `make test`.
# Both create .venv, install torch 2.13.0 (pinned in constraints.txt) and the package with
# the extras they need. Which torch build you get depends on the index pip sees:
#   - on the project machines the pin resolves to a local CPU wheel;
#   - on a machine with only the public PyPI index it resolves to the CUDA build (~3 GB of
#     NVIDIA libraries). For the CPU build there, name PyTorch's CPU index:
#       make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
#   - GPU users: `make ... TORCH_INDEX=https://download.pytorch.org/whl/cu128` (your CUDA).
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
# Everything the test suite imports (dev already lists the runtimes; the others keep the
# suite honest if dev shrinks).
EXTRAS      ?= dev,plot,export,onnx,hubert,wenet,ray
DEMO_EXTRAS ?= torch,plot
TORCH_INDEX ?=
CONSTRAINT  := PIP_CONSTRAINT=$(CURDIR)/constraints.txt
TORCH_FROM  := $(if $(strip $(TORCH_INDEX)),--index-url $(TORCH_INDEX),)
comma       := ,
STAMP        = $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup test demo bench golden golden-ave golden-hubert golden-wenet clean

setup: $(STAMP)

$(VENV)/.installed-%: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip "setuptools>=77" wheel
	$(CONSTRAINT) $(PIP) install -q $(TORCH_FROM) torch==2.13.0
	$(CONSTRAINT) $(PIP) install -q -e '.[$(EXTRAS)]'
	touch $@

# PYTEST_ARGS passes options through (e.g. PYTEST_ARGS="-x tests/test_install.py"). pytest's own
# exit status is kept in $(VENV)/.pytest-rc for .ci/run (make itself only says 2 on failure).
test: $(STAMP)
	@rm -f $(VENV)/.pytest-rc
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; echo $$rc > $(VENV)/.pytest-rc; exit $$rc

demo:
	$(MAKE) setup EXTRAS=$(DEMO_EXTRAS)
	$(VENV)/bin/synctalk-audio demo -o demo_output --force

# BENCH_ARGS="--long" adds the 1-hour run. librosa 0.10.1 (the baseline) imports pkg_resources,
# which setuptools >= 81 dropped while torch 2.13 needs setuptools >= 77: the benchmark alone
# gets setuptools 69's pkg_resources in .venv/bench-site (bench.py puts it on the path).
# The wenet baseline needs torchaudio's compliance/kaldi.py (upstream's fbank; its compiled part
# does not load against torch 2.13, so the wheel goes --no-deps into a folder never on sys.path,
# and bench.py loads that one file) and kaldi-native-fbank (Kaldi's C++ fbank, for comparison).
BENCH_SITE := $(VENV)/bench-site
BENCH_UPSTREAM := $(VENV)/bench-upstream

bench:
	$(MAKE) setup EXTRAS=dev,plot,export,ray,bench
	$(MAKE) $(BENCH_SITE)/pkg_resources/__init__.py $(BENCH_UPSTREAM)/.installed
	$(PY) benchmarks/bench.py $(BENCH_ARGS)
	$(PY) benchmarks/bench_jobs.py

$(BENCH_UPSTREAM)/.installed:
	rm -rf $(BENCH_UPSTREAM)
	$(PIP) install -q --no-deps --target $(BENCH_UPSTREAM)/torchaudio "torchaudio>=2.5"
	$(PIP) install -q --no-deps --target $(BENCH_UPSTREAM)/knf kaldi-native-fbank
	touch $@

$(BENCH_SITE)/pkg_resources/__init__.py:
	rm -rf $(BENCH_SITE).tmp
	$(PIP) install -q --no-deps --target $(BENCH_SITE).tmp "setuptools<70"
	mkdir -p $(BENCH_SITE)
	rm -rf $(BENCH_SITE)/pkg_resources
	mv $(BENCH_SITE).tmp/pkg_resources $(BENCH_SITE)/pkg_resources
	rm -rf $(BENCH_SITE).tmp

# Regenerates the golden files with the independent oracles, each in its own throw-away venv
# under /tmp (never this package): librosa 0.10.1 for ave, transformers 4.x for hubert,
# torchaudio's kaldi.py (only that file: installed --no-deps, its compiled part does not load
# against current torch) + kaldi-native-fbank + onnxruntime for wenet. An oracle whose script
# is absent is skipped. `make golden-ave` / `golden-hubert` / `golden-wenet` run one of them.

golden: golden-ave golden-hubert golden-wenet

# The oracles' throw-away venvs, pinned to the versions their manifests record (golden/
# manifest.json, golden/hubert/, golden/wenet/), so that a regeneration on a fresh machine writes
# the committed files byte for byte. The pins are applied on every run: a venv left by another
# session with other versions is brought back to them (pip does nothing when they hold).
ORACLE_COMMON := numpy==2.4.6 soundfile==0.14.0 soxr==1.1.0
ORACLE_AVE    := librosa==0.10.1 scipy==1.17.1 "setuptools<70"
ORACLE_HUBERT := transformers==4.57.6 librosa==0.10.1 "setuptools<81"
ORACLE_WENET  := kaldi-native-fbank==1.23.0 onnxruntime==1.32.0

golden-ave:
	test -x /tmp/oracle/bin/python || $(PYTHON) -m venv /tmp/oracle
	$(CONSTRAINT) /tmp/oracle/bin/pip install -q $(TORCH_FROM) torch==2.13.0
	/tmp/oracle/bin/pip install -q $(ORACLE_COMMON) $(ORACLE_AVE)
	/tmp/oracle/bin/python golden/make_golden.py

golden-hubert:
	test -x /tmp/oracle-hubert/bin/python || $(PYTHON) -m venv /tmp/oracle-hubert
	$(CONSTRAINT) /tmp/oracle-hubert/bin/pip install -q $(TORCH_FROM) torch==2.13.0
	/tmp/oracle-hubert/bin/pip install -q $(ORACLE_COMMON) $(ORACLE_HUBERT)
	/tmp/oracle-hubert/bin/python golden/make_golden_hubert.py

# torchaudio: only its compliance/kaldi.py is used (its compiled part does not load against torch 2.13)
golden-wenet:
	test -x /tmp/oracle-wenet/bin/python || $(PYTHON) -m venv /tmp/oracle-wenet
	$(CONSTRAINT) /tmp/oracle-wenet/bin/pip install -q $(TORCH_FROM) torch==2.13.0
	/tmp/oracle-wenet/bin/pip install -q $(ORACLE_COMMON) $(ORACLE_WENET)
	/tmp/oracle-wenet/bin/pip install -q --no-deps torchaudio==2.11.0
	/tmp/oracle-wenet/bin/python golden/make_golden_wenet.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
