"""The calculator route against the native route, per material, for the built-in potential.

The same model evaluated two ways: natively (`JaxPotential`: analytic force constants from
symmetry-reduced HVPs for phonons, displaced supercells batched through one compiled function for
κ) and as any ASE calculator is (`AseCalculator(potential.calculator())`: phonopy / phono3py
finite displacements, one structure at a time). For Si mp-149 (the MDR record, default phonon
protocol) and NaCl (phonopy-NaCl's unit cell, 2x2x2 conventional fc3 supercell: 146 displaced
supercells of 64 atoms, Matbench protocol on `--mesh`), prints each route's wall time split
(relaxation, force constants or fc2/fc3 forces, phonopy / phono3py), the ratio calculator /
native, the per-structure overhead of the calculator route, and how far the results differ.
Each route runs once on a warm-up material first, so that compilation is not counted.

    python benchmarks/providers.py [--model PATH] [--mesh 11]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import peak_rss_mb, shared_dir

import phonon_eval as pe
from phonon_eval.kappa import KappaMaterial, KappaSettings
from phonon_eval.kappa import evaluate_material as evaluate_kappa
from phonon_eval.phonons import PhononSettings, evaluate_material


def _rows(potential: pe.Potential, evaluate, material, settings, warm_up) -> dict[str, tuple[dict, float]]:
    """Each route's result row and wall time, after a warm-up run that compiles."""
    out = {}
    for name, provider in {"native": pe.as_provider(potential), "calculator": pe.AseCalculator(potential.calculator())}.items():
        evaluate(provider, material, warm_up)
        t = time.perf_counter()
        row = evaluate(provider, material, settings)
        out[name] = row, time.perf_counter() - t
    return out


def phonons(potential: pe.Potential, shared: Path) -> None:
    record = pe.read_record(shared / "data" / "mdr" / "mp-149.yaml")
    settings = PhononSettings.from_protocol("exact")  # the native route's best: analytic force constants
    print(f"Si mp-149 phonons ({record.n_supercell_atoms}-atom supercell), exact protocol:")
    rows = {}
    for name, (row, total) in _rows(potential, evaluate_material, record, settings, settings).items():
        rows[name] = row
        print(f"  {name:10s} {row['fc_method']:8s} ({row['n_fc_evaluations']} {'HVPs' if row['fc_method'] == 'analytic' else 'supercells'}): "
              f"relax {row['time_relax']:6.2f} s, force constants {row['time_fc']:6.2f} s, "
              f"phonopy {row['time_properties']:6.2f} s, total {total:6.2f} s")
    a, b = rows["native"], rows["calculator"]
    print(f"  ratio calculator / native: relax {b['time_relax'] / a['time_relax']:.2f}, "
          f"force constants {b['time_fc'] / a['time_fc']:.2f}")
    i = settings.temperatures.index(300.0)
    print(f"  differences: ω_max {abs(a['omega_max'] - b['omega_max']):.2e} THz, "
          f"S(300 K) {abs(a['entropy'][i] - b['entropy'][i]):.2e} J/K/mol (analytic vs 0.01 Å finite differences)")


def kappa(potential: pe.Potential, shared: Path, mesh: int) -> None:
    unitcell = pe.read_record(shared / "data" / "dft" / "phonopy-NaCl").unitcell
    smat = 2 * np.eye(3, dtype=int)
    material = KappaMaterial(id="NaCl", unitcell=unitcell, fc3_supercell=smat, fc2_supercell=smat, primitive_matrix="F")
    settings = KappaSettings(mesh=(mesh,) * 3)
    warm = KappaSettings(relax_steps=5, mesh=(2, 2, 2), method="rta")  # compiles the relaxation's shapes too
    print(f"NaCl κ, Matbench protocol (wigner, isotopes) on {mesh}^3:")
    rows = {}
    for name, (row, total) in _rows(potential, evaluate_kappa, material, settings, warm).items():
        rows[name] = row
        print(f"  {name:10s}: relax {row['time_relax']:6.2f} s, fc2 {row['time_fc2']:6.2f} s ({row['n_fc2_supercells']}), "
              f"fc3 {row['time_fc3']:6.2f} s ({row['n_fc3_supercells']}), phono3py {row['time_force_constants'] + row['time_conductivity']:6.2f} s, "
              f"total {total:6.2f} s, κ {row['kappa'][0]:.3f} W/m-K")
    a, b = rows["native"], rows["calculator"]
    n = a["n_fc3_supercells"]
    print(f"  ratio calculator / native: relax {b['time_relax'] / a['time_relax']:.2f}, fc3 forces {b['time_fc3'] / a['time_fc3']:.2f}; "
          f"per-structure overhead of the calculator route {1e3 * (b['time_fc3'] - a['time_fc3']) / n:+.1f} ms")
    print(f"  κ differs by {b['kappa'][0] / a['kappa'][0] - 1:+.1e} (float32 forces; phono3py's tetrahedron method is not "
          "continuous at exact degeneracies)")


def main() -> None:
    shared = shared_dir()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shared / "models" / "nequix-mp-1.nqx"))
    parser.add_argument("--mesh", type=int, default=11, help="κ q-mesh (Matbench: 19 for rocksalt)")
    args = parser.parse_args()
    potential = pe.load_potential(args.model)
    print(f"model {Path(args.model).stem}")
    phonons(potential, shared)
    kappa(potential, shared, args.mesh)
    print(f"peak memory {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
