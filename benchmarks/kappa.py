"""κ: the fc3 forces batched vs one supercell at a time through ASE, and a material's time split.

For rocksalt NaCl (the unit cell of the phonopy-NaCl example) and a 2x2x2 conventional fc3
supercell (64 atoms), prints how many supercells phono3py displaces at 0.03 Å, then for a small
random Nequix (where per-call overhead dominates) and for `--model` (nequix-mp-1: compute
dominates) the seconds for the forces of all displaced supercells (a) batched through one
compiled function over one shared neighbour graph (`batched_forces`, in chunks) and (b) one
supercell at a time through the ASE calculator (`atoms.calc = potential.calculator()`, as the
Matbench Discovery scripts do; it also computes energy and stress on every call, as it does for
any ASE user), both after a warm-up call that compiles, their ratio b/a, and the largest force
difference. Then κ of NaCl with `--model` three ways, each one run with its time split (relax,
fc2 and fc3 forces, phono3py's force constants, Wigner κ at 300 K on the mesh) and its ratio to
the first: the plain per-structure ASE loop of the Matbench script, `pft-eval kappa`'s full
route (protocol `matbench`) and its fast route (protocol `fast`: random displacements + symfc).

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
from phonon_eval.provider import as_provider
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

    material = KappaMaterial(id="NaCl", unitcell=unitcell, fc3_supercell=smat, fc2_supercell=smat, primitive_matrix="F")
    settings = KappaSettings(mesh=(args.mesh,) * 3)
    print(f"\nκ of NaCl with {Path(args.model).stem}, {settings.method}, isotopes, {args.mesh}^3 mesh, 300 K, one run each:")
    loop_row, loop_total = ase_loop(potential, material, settings)
    routes = [("ASE loop (Matbench script)", loop_row, loop_total)]
    for name, protocol in (("full route (matbench)", "matbench"), ("fast route (fast)", "fast")):
        t = time.perf_counter()
        row = evaluate_material(potential, material, KappaSettings.from_protocol(protocol, mesh=settings.mesh))
        routes.append((name, row, time.perf_counter() - t))
    steps = ("relax", "fc2", "fc3", "force_constants", "conductivity")
    print(f"{'':28s} {'supercells':>10s} " + " ".join(f"{s:>15s}" for s in steps) + f" {'total s':>8s} {'/loop':>6s} {'κ W/m-K':>8s} {'κ/κ_full':>8s}")
    kappa_full = routes[1][1]["kappa"][0]
    for name, row, total in routes:
        cells = f"{row['n_fc2_supercells']}+{row['n_fc3_supercells']}"
        split = " ".join(f"{row[f'time_{s}']:15.1f}" for s in steps)
        kappa = row["kappa"][0]
        print(f"{name:28s} {cells:>10s} {split} {total:8.1f} {total / loop_total:6.2f} {kappa:8.3f} {kappa / kappa_full:8.4f}")
    floor = min(row["time_conductivity"] for _, row, _ in routes) / loop_total
    print(f"floor: phono3py's conductivity, which every route runs unchanged, is {floor:.2f} of the loop's time")
    print(f"peak memory {peak_rss_mb():.0f} MB")


def ase_loop(potential: pe.Potential, material: KappaMaterial, settings: KappaSettings) -> tuple[dict, float]:
    """κ as the Matbench Discovery script makes it: the same relaxation, then every displaced
    supercell through the model's ASE calculator one at a time, phono3py for the rest."""
    from phonon_eval.kappa import produce_force_constants, run_conductivity
    from phonon_eval.relax import relax

    times, t0 = {}, time.perf_counter()
    last = t0

    def tick(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        times[f"time_{name}"], last = now - last, now

    calc = potential.calculator()
    relaxed = relax(potential, material.unitcell, fmax=settings.fmax, steps=settings.relax_steps, symprec=settings.symprec).atoms
    tick("relax")
    ph3 = Phono3py(phonopy_from_ase(relaxed), supercell_matrix=material.fc3_supercell, primitive_matrix=material.primitive_matrix,
                   phonon_supercell_matrix=material.fc2_supercell, symprec=settings.symprec)
    ph3.generate_displacements(distance=settings.displacement)

    def forces(cells) -> np.ndarray:
        out = []
        for cell in cells:
            atoms = ase_from_phonopy(cell)
            atoms.calc = calc
            out.append(atoms.get_forces())
        return np.array(out)

    ph3.phonon_forces = forces(ph3.phonon_supercells_with_displacements)
    tick("fc2")
    ph3.forces = forces(ph3.supercells_with_displacements)
    tick("fc3")
    produce_force_constants(ph3, settings.fc_symmetrization)
    tick("force_constants")
    ph3.mesh_numbers = list(settings.mesh)
    ph3.init_phph_interaction()
    kappa = run_conductivity(ph3, settings).kappa
    tick("conductivity")
    row = {"kappa": kappa, "n_fc2_supercells": len(ph3.phonon_supercells_with_displacements),
           "n_fc3_supercells": len(ph3.supercells_with_displacements), **times}
    return row, time.perf_counter() - t0


def _seconds(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def compare_forces(name: str, potential: pe.Potential, supercell: ase.Atoms, positions: np.ndarray, chunk: int) -> None:
    """Print the seconds for all forces, batched and one at a time through ASE, and the ratio."""

    provider = as_provider(potential)
    provider.chunk = chunk

    def batched(n: int) -> np.ndarray:  # as the evaluator calls it
        return provider.forces(supercell, positions[:n])

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
