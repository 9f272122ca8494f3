# striate developer entry points. `make test` and `make demo` install on first run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

BOARD  ?= icebreaker
MINUTES ?= 10

.PHONY: install test test-all demo bench verilog cycles bitstream fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(PYTHON) $(VENV)
	touch $@

test: install              ## the CI suite (everything not marked slow)
	$(PY) -m pytest -q -m "not slow"

test-all: install          ## every tier, slow ones included
	$(PY) -m pytest -q

MODEL ?= lenet-digits
demo: install              ## MODEL=lenet-digits|dscnn-digits|tdnn-digits: compile, run the test split
	$(PY) -m striate.cli demo --model $(MODEL)

bench: install             ## cycles, simulator speeds, golden vs PyTorch speed -> build/bench.json
	$(PY) -m striate.cli bench -o build/bench.json

fuzz: install              ## MINUTES=N of differential fuzzing on a fresh seed; summary line at the end
	$(PY) -m striate.cli fuzz --minutes $(MINUTES)

verilog: install           ## Verilog of the default config in build/, lint, synthesis report
	$(PY) -m striate.cli verilog -o build --lint --synth

cycles: install            ## LeNet per-layer cycles and utilization from the RTL
	$(PY) -m pytest -q -s tests/test_rtl.py -k lenet_on_test_images

bitstream: install        ## BOARD=icebreaker|ulx3s|ulx3s-sdram: bitstream and build/$(BOARD)/report.json
	$(PY) -m striate.cli bitstream $(BOARD)

clean:
	rm -rf build .pytest_cache .hypothesis
