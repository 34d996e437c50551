#!/usr/bin/env bash
# Regenerate (or continue) the data sets shipped in python/qallegro/data/builtin/.
# Every command is resumable: rerunning it appends only the frames that are missing, and frames whose
# SCF failed are listed in <file>.failed.jsonl and not retried. Run one data set at a time:
#   bash scripts/generate_builtin.sh culi      # or benzene | gpaw | aspirin | all (in that order)
#   bash scripts/generate_builtin.sh status    # frames so far; non-zero exit if a file ends mid-frame
# CPU: one process, one thread, lowest priority (the runs take hours; see the builtin README for timings).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=python/qallegro/data/builtin
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
GEN="nice -n 19 python -m qallegro data generate"

culi() {  # needs: pip install tblite
  # GFN1-xTB's own equilibrium volumes (32-atom Gamma-point cells): fcc Cu a = 3.87 Å, bcc Li a = 4.17 Å.
  # About 1 slab in 10 does not converge (logged, not written): 175 slabs asked so that >= 1000 frames remain.
  $GEN --system culi --atoms 32-64 --compositions 0,0.125,0.25,0.375,0.5,0.625,0.75,0.875,1 \
    --volumes Cu=14.5,Li=36.3 --calculator gfn1-xtb --calc-option electronic_temperature=300 \
    --md 150 --md-segment 10 --md-every 3 --md-equilibration 10 --temperatures 300,600,900 --timestep 2 \
    --rattle 300 --strain 250 --vacancy 150 --surface 175 --seed 0 -o $OUT/culi_gfn1xtb.extxyz "$@"
}

benzene() {  # needs: pip install pyscf tblite
  $GEN --system C6H6 --calculator pbe-def2svp --driver gfn1-xtb \
    --md 300 --md-segment 50 --md-every 20 --md-equilibration 200 --temperatures 500 --timestep 0.5 \
    --seed 0 -o $OUT/benzene_pbe_def2svp.extxyz "$@"
}

gpaw() {  # needs: apt-get install libxc-dev libopenblas-dev liblapack-dev libfftw3-dev; CC=g++ pip install gpaw gpaw-data
  $GEN --system culi --atoms 8-8 --compositions 0,0.25,0.5,0.75,1 --calculator gpaw-pbe --driver gfn1-xtb \
    --md 40 --md-segment 10 --md-every 10 --md-equilibration 20 --temperatures 300,600 --timestep 2 \
    --rattle 30 --strain 20 --vacancy 10 --seed 0 -o $OUT/culi_gpaw_pbe.extxyz "$@"
}

aspirin() {  # needs: pip install pyscf tblite rdkit (rdkit only embeds the starting geometry from SMILES)
  $GEN --system "smiles:CC(=O)OC1=CC=CC=C1C(=O)O" --calculator pbe-def2svp --driver gfn1-xtb \
    --md 100 --md-segment 25 --md-every 20 --md-equilibration 400 --temperatures 500 --timestep 0.5 \
    --seed 0 -o $OUT/aspirin_pbe_def2svp.extxyz "$@"
}

status() {  # frames per file; fails if a file ends in a torn frame (do not commit it then)
  python - "$OUT" <<'PY'
import sys
from pathlib import Path
from qallegro.data.generate.store import read_failed, scan_frames
ok = True
for path in sorted(Path(sys.argv[1]).glob("*.extxyz")):
    keys, end = scan_frames(path)
    n_failed = len(read_failed(path.with_name(path.name + ".failed.jsonl")))
    whole = end == path.stat().st_size
    ok &= whole
    print(f"{path.name}: {len(keys)} frames, {n_failed} failed{'' if whole else ', TORN LAST FRAME'}")
sys.exit(0 if ok else 1)
PY
}

case "${1:-all}" in
  culi) shift; culi "$@" ;;
  benzene) shift; benzene "$@" ;;
  gpaw) shift; gpaw "$@" ;;
  aspirin) shift; aspirin "$@" ;;
  all) culi; benzene; gpaw; aspirin ;;
  status) status ;;
  *) echo "usage: $0 [culi|benzene|gpaw|aspirin|all|status] [extra generate options]" >&2; exit 2 ;;
esac
