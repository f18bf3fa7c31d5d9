"""κ: the fc3 forces batched vs one supercell at a time through ASE, and a material's time split.

For rocksalt NaCl (the unit cell of the phonopy-NaCl example) and a 2x2x2 conventional fc3
supercell (64 atoms), prints how many supercells phono3py displaces at 0.03 Å, then for a small
random Nequix (where per-call overhead dominates) and for `--model` (nequix-mp-1: compute
dominates) the seconds for the forces of all displaced supercells (a) batched through one
compiled function over one shared neighbour graph (`batched_forces`, in chunks) and (b) one
supercell at a time through the ASE calculator (`atoms.calc = potential.calculator()`, as the
Matbench Discovery scripts do; it also computes energy and stress on every call, as it does for
any ASE user), both after a warm-up call that compiles, their ratio b/a, and the largest force
difference. Then the time split of one `evaluate_material` run with `--model` and the Matbench
protocol (relax, fc2 and fc3 forces, phono3py's force constants, Wigner κ at 300 K on the
mesh; no reference, so no metrics).

    python benchmarks/kappa.py [--model PATH] [--mesh 19] [--chunk 8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import ase
import jax
import numpy as np
from _common import peak_rss_mb, shared_dir
from phono3py import Phono3py

import phonon_eval as pe
from phonon_eval.kappa import KappaMaterial, KappaSettings, evaluate_material
from phonon_eval.records import ase_from_phonopy, phonopy_from_ase


def main() -> None:
    shared = shared_dir()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shared / "models" / "nequix-mp-1.nqx"))
    parser.add_argument("--mesh", type=int, default=19, help="q-mesh of the time split (Matbench: 19 for rocksalt)")
    parser.add_argument("--chunk", type=int, default=8, help="supercells per call of the compiled function")
    args = parser.parse_args()
    unitcell = pe.read_record(shared / "data" / "dft" / "phonopy-NaCl").unitcell
    smat = 2 * np.eye(3, dtype=int)

    ph3 = Phono3py(phonopy_from_ase(unitcell), supercell_matrix=smat, primitive_matrix="F")
    ph3.generate_displacements(distance=0.03)
    supercell = ase_from_phonopy(ph3.supercell)
    positions = np.array([s.positions for s in ph3.supercells_with_displacements])
    print(f"NaCl, {len(supercell)}-atom fc3 supercell (2x2x2 conventional): {len(positions)} displaced supercells at 0.03 Å")

    config = pe.NequixConfig(
        atomic_numbers=(11, 17), cutoff=5.0, hidden_irreps="8x0e + 4x1o", lmax=1, n_layers=2,
        radial_basis_size=4, radial_mlp_size=8, avg_n_neighbors=20.0,
    )
    small = pe.Potential(model=pe.Nequix(config, key=jax.random.key(0)), atomic_numbers=(11, 17), cutoff=5.0)
    compare_forces("small random Nequix (2 layers, 8x0e + 4x1o)", small, supercell, positions, args.chunk)
    potential = pe.load_potential(args.model)
    compare_forces(Path(args.model).stem, potential, supercell, positions, args.chunk)

    settings = KappaSettings(mesh=(args.mesh,) * 3)
    material = KappaMaterial(id="NaCl", unitcell=unitcell, fc3_supercell=smat, fc2_supercell=smat, primitive_matrix="F")
    t = time.perf_counter()
    row = evaluate_material(potential, material, settings)
    total = time.perf_counter() - t
    print(
        f"evaluate_material with {Path(args.model).stem}, Matbench protocol ({settings.method}, isotopes, "
        f"{args.mesh}^3 mesh, 300 K): status {row['status']} {row['error']}, "
        f"κ = {row.get('kappa', [np.nan])[0]:.2f} W/m-K"
    )
    print(f"  relaxation: {row['relax_steps']} FIRE steps, converged {bool(row['relax_converged'])}")
    print(f"  {row['n_fc2_supercells']} fc2 + {row['n_fc3_supercells']} fc3 displaced supercells")
    for name in ("relax", "setup", "fc2", "fc3", "force_constants", "conductivity"):
        seconds = row.get(f"time_{name}", np.nan)
        print(f"  {name:16s} {seconds:7.2f} s  {100 * seconds / total:5.1f} %")
    print(f"  {'total':16s} {total:7.2f} s   peak memory {peak_rss_mb():.0f} MB")


def _seconds(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def compare_forces(name: str, potential: pe.Potential, supercell: ase.Atoms, positions: np.ndarray, chunk: int) -> None:
    """Print the seconds for all forces, batched and one at a time through ASE, and the ratio."""

    def batched(n: int) -> np.ndarray:
        return pe.batched_forces(potential, supercell, positions[:n], skin=0.2, chunk=chunk)

    def one_at_a_time(n: int) -> np.ndarray:
        calc = potential.calculator()
        out = []
        for r in positions[:n]:
            atoms = supercell.copy()
            atoms.positions = r
            atoms.calc = calc
            out.append(atoms.get_forces())
        return np.array(out)

    _, compile_a = _seconds(lambda: batched(chunk))
    f_a, t_a = _seconds(lambda: batched(len(positions)))
    _, compile_b = _seconds(lambda: one_at_a_time(1))
    f_b, t_b = _seconds(lambda: one_at_a_time(len(positions)))
    print(name)
    print(f"  (a) batched, chunks of {chunk}          : {t_a:7.2f} s  (warm-up incl. compile {compile_a:.1f} s)")
    print(f"  (b) ASE calculator, one at a time : {t_b:7.2f} s  (warm-up incl. compile {compile_b:.1f} s)")
    print(f"  b/a = {t_b / t_a:.1f}x   max |a - b| = {np.abs(f_a - f_b).max():.2e} eV/Å")


if __name__ == "__main__":
    main()
