"""Phonons and κ in float32 and float64: what single precision does to each evaluator.

Phonons: Si mp-149 (the MDR record, default protocol: relaxation, analytic force constants)
with `--model` in both precisions, and the differences of ω_max, S, F, C_V at 300 K.

κ, through 0.03 Å central differences of forces: for Si (the phono3py-Si-PBE example's structure and 2x2x2 conventional fc3 supercell, 111
displaced supercells at 0.03 Å, no relaxation, so both precisions see the same geometry) and
`--model` (nequix-mp-1), prints κ at 300 K with the force constants from float32 and from
float64 forces, on the same q-mesh and method, their relative difference and the SRME between
the two mode-resolved κ, the largest force difference, and phono3py's own floor: κ again from
the float64 forces with 1e-15 eV/Å added to every component, which moves the tetrahedron
method's κ as well (it is not continuous at the exact degeneracies of a symmetric mesh). The
fc3 forces' wall time in each precision is printed too.

    python benchmarks/precision.py [--model PATH] [--mesh 11] [--method rta] [--part phonons|kappa|both]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import peak_rss_mb, shared_dir

import phonon_eval as pe
from phonon_eval.kappa import KappaSettings, produce_force_constants, run_conductivity, srme
from phonon_eval.records import ase_from_phonopy


def main() -> None:
    shared = shared_dir()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shared / "models" / "nequix-mp-1.nqx"))
    parser.add_argument("--mesh", type=int, default=11)
    parser.add_argument("--method", default="rta", choices=("rta", "wigner", "lbte"))
    parser.add_argument("--part", default="both", choices=("phonons", "kappa", "both"))
    args = parser.parse_args()
    if args.part != "kappa":
        phonons(shared, args.model)
    if args.part != "phonons":
        kappa(shared, args)


def phonons(shared: Path, model: str) -> None:
    from phonon_eval.phonons import PhononSettings, evaluate_material

    record = pe.read_record(shared / "data" / "mdr" / "mp-149.yaml")
    potential = pe.load_potential(model)
    settings = PhononSettings()
    rows = {dtype: evaluate_material(pe.as_provider(potential, dtype=dtype), record, settings) for dtype in ("float32", "float64")}
    i = settings.temperatures.index(300.0)
    print(f"Si mp-149 phonons, {Path(model).stem}, default protocol (relaxed, analytic force constants):")
    for name, unit, pick in (("omega_max", "THz", lambda r: r["omega_max"]), ("entropy", "J/K/mol", lambda r: r["entropy"][i]),
                             ("free_energy", "kJ/mol", lambda r: r["free_energy"][i]), ("heat_capacity", "J/K/mol", lambda r: r["heat_capacity"][i])):
        a, b = pick(rows["float32"]), pick(rows["float64"])
        print(f"  {name:14s} float32 {a:10.5f}  float64 {b:10.5f} {unit:8s} relative difference {a / b - 1:+.1e}")
    print(f"  relaxation steps: float32 {rows['float32']['relax_steps']}, float64 {rows['float64']['relax_steps']}; "
          f"volume {rows['float32']['volume'] / rows['float64']['volume'] - 1:+.1e} relative")


def kappa(shared: Path, args: argparse.Namespace) -> None:
    record = pe.read_record(shared / "data" / "dft" / "phono3py-Si-PBE")
    settings = KappaSettings(relax=False, mesh=(args.mesh,) * 3, method=args.method, isotope=False)
    potential = pe.load_potential(args.model)

    def phono3py():
        ph3 = record.to_phono3py(produce_fc=False)
        ph3.generate_displacements(distance=settings.displacement)
        return ph3

    ph3 = phono3py()
    supercell = ase_from_phonopy(ph3.supercell)
    positions = np.array([s.positions for s in ph3.supercells_with_displacements])
    print(f"Si, {len(supercell)}-atom fc3 supercell, {len(positions)} displaced supercells at {settings.displacement} Å, "
          f"{Path(args.model).stem}, {args.method} on {args.mesh}^3, 300 K, no isotopes")
    forces, seconds = {}, {}
    for dtype in ("float32", "float64"):
        provider = pe.as_provider(potential, dtype=dtype)
        provider.forces(supercell, positions[:8])  # compile
        t = time.perf_counter()
        forces[dtype] = provider.forces(supercell, positions)
        seconds[dtype] = time.perf_counter() - t

    def solve(f: np.ndarray):
        ph3 = phono3py()
        ph3.forces = f
        produce_force_constants(ph3)
        ph3.mesh_numbers = list(settings.mesh)
        ph3.init_phph_interaction()
        return run_conductivity(ph3, settings)

    k32, k64, k64_noise = solve(forces["float32"]), solve(forces["float64"]), solve(forces["float64"] + 1e-15)
    print(f"  max |F32 - F64| = {np.abs(forces['float32'] - forces['float64']).max():.2e} eV/Å "
          f"(largest force {np.abs(forces['float64']).max():.2f} eV/Å)")
    for name, c in (("float32", k32), ("float64", k64), ("float64 + 1e-15 eV/Å", k64_noise)):
        d = c.kappa[0] / k64.kappa[0] - 1
        e = srme(c.mode_kappa, k64.mode_kappa, c.weights, c.kappa, k64.kappa)[0]
        print(f"  {name:22s} κ = {c.kappa[0]:9.4f} W/m-K   vs float64: {d:+.2e}   SRME {e:.2e}")
    print(f"  fc3 forces: float32 {seconds['float32']:.1f} s, float64 {seconds['float64']:.1f} s "
          f"(ratio {seconds['float64'] / seconds['float32']:.2f})   peak memory {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
