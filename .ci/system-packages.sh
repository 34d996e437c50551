#!/usr/bin/env bash
# Debian packages the tests need (PostgreSQL for the shared-study test; libxc, BLAS/LAPACK and FFTW for
# `make gpaw`, which builds GPAW for the gpaw-pbe tests). Skipped when present.
set -euo pipefail
need=()
command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
for pkg in libxc-dev libopenblas-dev liblapack-dev libfftw3-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
