"""Force constants from a potential: symmetry-reduced HVPs vs all 3N HVPs vs phonopy displacements.

For Si mp-149 (64 atoms) and a lower-symmetry record (default MgB2, P6/mmm, 54 atoms), prints the
number of evaluations and seconds for (a) symmetry-reduced analytic force constants, (b) the
dense Hessian from all 3N HVPs, (c) phonopy finite displacements with the potential's batched
forces, the ratios b/a and c/a measured in the same run, and the largest difference of a from b
(exactness) and from c (finite-difference error). Compile time is excluded: each method runs
once to warm up, then is timed.

    python benchmarks/force_constants.py [--model PATH] [--records mp-149 phonopy-MgB2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import shared_dir

import phonon_eval as pe
from phonon_eval.records import ase_from_phonopy
from phonon_eval.symmetry import SupercellSymmetry


def _time(fn, repeats: int = 1) -> tuple[object, float]:
    fn()  # compile
    t = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return out, (time.perf_counter() - t) / repeats


def main() -> None:
    shared = shared_dir()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shared / "models" / "nequix-mp-1.nqx"))
    parser.add_argument("--records", nargs="+", default=["mdr/mp-149.yaml", "dft/phonopy-MgB2"])
    args = parser.parse_args()
    potential = pe.load_potential(args.model)

    for name in args.records:
        record = pe.read_record(shared / "data" / name)
        ph = record.to_phonopy()
        supercell = ase_from_phonopy(ph.supercell)
        symmetry = SupercellSymmetry.from_atoms(supercell)
        n_cols = len(symmetry.independent_columns())

        fc_a, t_a = _time(lambda: pe.analytic_force_constants(potential, supercell, symmetry), repeats=3)
        fc_b, t_b = _time(lambda: pe.hessian(potential, supercell))
        ph_c = record.to_phonopy()
        fc_c, t_c = _time(lambda: pe.finite_force_constants(potential, ph_c, distance=0.01))
        n_disp = len(ph_c.displacements)

        print(f"{record.id} ({record.formula}, {symmetry.international}, {len(supercell)} atoms in the supercell)")
        print(f"  (a) analytic, symmetry-reduced : {n_cols:4d} HVPs          {t_a:8.2f} s")
        print(f"  (b) dense Hessian              : {3 * len(supercell):4d} HVPs          {t_b:8.2f} s")
        print(f"  (c) phonopy finite 0.01 Å      : {n_disp:4d} supercells    {t_c:8.2f} s")
        print(f"  b/a = {t_b / t_a:.1f}x   c/a = {t_c / t_a:.2f}x")
        print(f"  max |a - b| = {np.abs(fc_a - fc_b).max():.2e} eV/Å²   max |a - c| = {np.abs(fc_a - fc_c).max():.2e} eV/Å²"
              f"   (max |fc| = {np.abs(fc_b).max():.2f})")


if __name__ == "__main__":
    main()
