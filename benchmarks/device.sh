#!/usr/bin/env bash
# Accelerator readiness, in one call: what JAX runs on, then the seed's comparison (one PFT step by
# a Hessian-vector product vs by the full Hessian, the seed's small model on Si 64; the seed
# reports > 35x faster and > 80x less memory on a GPU) and nequix-mp-1's time per material for
# phonons (Si mp-149, mdr protocol) and kappa (Si, phono3py DFT example, matbench protocol).
# On a GPU at full size; on a CPU with smaller sizes (fewer steps, the full-Hessian step only
# compiled where it would not fit, a coarser kappa mesh), so that it runs anywhere.
#
#   bash benchmarks/device.sh            # PFT_SHARED defaults to ../shared
set -euo pipefail
cd "$(dirname "$0")/.."
export PFT_SHARED="${PFT_SHARED:-$(cd .. && pwd)/shared}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # measure what is used, not JAX's 75 % grab
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

backend="$(python -c 'import jax; print(jax.default_backend())')"
python -c 'import jax; print("JAX", jax.__version__, "on", jax.default_backend(), jax.devices())'
if [ "$backend" = "cpu" ]; then steps=2; max_gb=8; mesh=11; else steps=5; max_gb=60; mesh=19; fi

echo "== PFT step: HVP vs full Hessian (benchmarks/finetune.py --steps $steps --max-gb $max_gb)"
python benchmarks/finetune.py --steps "$steps" --max-gb "$max_gb"

echo "== nequix-mp-1 per material"
pft-eval phonons "$PFT_SHARED/models/nequix-mp-1.nqx" --dataset "$PFT_SHARED/data/mdr" --materials mp-149 \
    --out "$out/phonons.nc" --no-progress > /dev/null
pft-eval kappa "$PFT_SHARED/models/nequix-mp-1.nqx" --dataset "$PFT_SHARED/data/dft" --materials phono3py-Si-PBE \
    --mesh "$mesh" --out "$out/kappa.nc" --no-progress > /dev/null
python - "$out" "$mesh" <<'PY'
import sys, xarray as xr
out, mesh = sys.argv[1], sys.argv[2]
for name, what in (("phonons", "phonons, Si mp-149 (relax, finite displacements, phonopy)"), ("kappa", f"kappa, Si 2x2x2 fc3 ({mesh}^3 mesh, Wigner)")):
    ds = xr.load_dataset(f"{out}/{name}.nc")
    parts = {v[5:]: float(ds[v][0]) for v in ds.data_vars if v.startswith("time_")}
    print(f"{what}: {sum(parts.values()):.1f} s (" + ", ".join(f"{k} {t:.1f}" for k, t in parts.items()) + ")")
PY
