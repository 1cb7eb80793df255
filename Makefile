# The two commands a fresh machine needs: `make demo` and `make test`.
# Both create .venv, install the CPU torch wheel pinned in constraints.txt and the package.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
EXTRAS ?= dev,plot,export
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup test demo bench golden clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PIP) install -q torch==2.13.0
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PIP) install -q -e '.[$(EXTRAS)]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/synctalk-audio demo -o demo_output

# BENCH_ARGS="--long" adds the 1-hour run. librosa 0.10.1 (the baseline) imports pkg_resources,
# which setuptools >= 81 dropped while torch 2.13 needs setuptools >= 77: the benchmark alone
# gets setuptools 69's pkg_resources in .venv/bench-site (bench.py puts it on the path).
BENCH_SITE := $(VENV)/bench-site

bench:
	$(MAKE) setup EXTRAS=dev,plot,export,bench
	$(MAKE) $(BENCH_SITE)/pkg_resources/__init__.py
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

$(BENCH_SITE)/pkg_resources/__init__.py:
	rm -rf $(BENCH_SITE).tmp
	$(PIP) install -q --no-deps --target $(BENCH_SITE).tmp "setuptools<70"
	mkdir -p $(BENCH_SITE)
	rm -rf $(BENCH_SITE)/pkg_resources
	mv $(BENCH_SITE).tmp/pkg_resources $(BENCH_SITE)/pkg_resources
	rm -rf $(BENCH_SITE).tmp

# Regenerates the golden files with the independent oracle (librosa 0.10.1 in /tmp/oracle).
golden:
	test -x /tmp/oracle/bin/python || ( $(PYTHON) -m venv /tmp/oracle && \
	  /tmp/oracle/bin/pip install torch==2.13.0 librosa==0.10.1 soundfile scipy && \
	  /tmp/oracle/bin/pip install "setuptools<70" )
	/tmp/oracle/bin/python golden/make_golden.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
