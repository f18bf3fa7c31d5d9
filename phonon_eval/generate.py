"""Reference records the project makes itself: phonopy finite displacements, any ASE calculator.

Each material is relaxed with the calculator (ASE UnitCellFilter + BFGS), displaced by
phonopy (0.01 Å, the MDR setting), and written as one record in the format `read_record` reads:
phonopy's own yaml with compact force constants, the displacement/force dataset and, as
MDR-style extra keys, thermal properties on phonopy's default mesh. A split file goes beside.

The built-in dataset (`data/emt/`) uses ASE's EMT on fcc metals and ordered L1_2 / L1_0 alloys;
regenerate it with `python -m phonon_eval.generate data/emt`. The same calculator makes the
upstream energy/force/stress frames of the demo (`generate_frames`, `data/emt-frames/`, with
`--frames`) and a phono3py record for the κ demo (`generate_kappa_record`, `data/emt-kappa/`,
with `--kappa`).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.calculators.singlepoint import SinglePointCalculator

from phonon_eval.atomic import atomic_write
from phonon_eval.records import (
    Record,
    RecordError,
    ase_from_phonopy,
    phonopy_from_ase,
    produce_force_constants,
    write_record,
    write_text,
)

__all__ = [
    "DISPLACEMENT",
    "EMT_SPLIT",
    "TEMPERATURES",
    "Material",
    "emt_materials",
    "generate_dataset",
    "generate_frames",
    "generate_kappa_record",
    "generate_record",
    "main",
    "make_split",
    "relax",
    "write_frames",
]

DISPLACEMENT = 0.01
"""Finite displacement (Å), as in the MDR phonon benchmark."""

KAPPA_DISPLACEMENT = 0.03
"""Finite displacement (Å) of the fc2 and fc3 supercells, phono3py's default."""

RATTLE = (0.01, 0.02, 0.05, 0.1)
"""Standard deviations (Å) of the Gaussian rattles of the upstream frames, in turn."""

TEMPERATURES = (0.0, 75.0, 150.0, 300.0, 600.0)
"""Temperatures (K) of the stored thermal properties, those of the MDR files."""

Strain = Literal["hydrostatic", "diagonal", "full", "none"]


@dataclass(frozen=True)
class Material:
    """A structure to generate a record for.

    Args:
        id: record id and file stem, e.g. "Cu3Au-L12".
        atoms: unit cell (periodic); relaxed before the displacements.
        supercell_matrix: (3, 3) or (3,) int, the phonopy supercell of `atoms`.
        strain: cell degrees of freedom relaxed: "hydrostatic" (lattice constant only, keeps a
            cubic cell exactly cubic), "diagonal" (a, b, c; e.g. tetragonal), "full", "none".
        primitive_matrix: (3, 3) or "auto" (phonopy finds it) or None (the unit cell).
    """

    id: str
    atoms: Atoms
    supercell_matrix: Sequence[int] | Sequence[Sequence[int]]
    strain: Strain = "full"
    primitive_matrix: str | Sequence[Sequence[float]] | None = "auto"


def relax(
    atoms: Atoms,
    calculator: BaseCalculator,
    strain: Strain = "full",
    fmax: float = 1e-5,
    steps: int = 500,
) -> Atoms:
    """Relax cell and positions with ASE (UnitCellFilter + BFGS) to zero stress.

    UnitCellFilter reaches the same minimum as FrechetCellFilter here (1e-6 Å on the EMT set)
    without its matrix exponentials, whose LAPACK calls took seconds per structure on a busy
    2-core machine.

    Args:
        atoms: structure; not modified.
        calculator: any ASE calculator.
        strain: which cell degrees of freedom move (see `Material`).
        fmax: convergence on forces (eV/Å) and on the filter's stress-derived forces.
        steps: at most this many BFGS steps; not converging raises RuntimeError.

    Returns:
        The relaxed copy, without calculator.
    """
    from ase.filters import UnitCellFilter
    from ase.optimize import BFGS

    relaxed = atoms.copy()
    relaxed.calc = calculator
    if strain == "none":
        target = relaxed
    else:
        mask = {"diagonal": [1, 1, 1, 0, 0, 0], "hydrostatic": None, "full": None}[strain]
        hydrostatic = strain == "hydrostatic"
        target = UnitCellFilter(relaxed, mask=mask, hydrostatic_strain=hydrostatic)
    optimizer = BFGS(target, logfile=None)
    if not optimizer.run(fmax=fmax, steps=steps):
        raise RuntimeError(f"relaxation did not reach fmax={fmax} eV/Å in {steps} steps")
    relaxed.calc = None
    return relaxed


def reference_name(calculator: BaseCalculator) -> str:
    """The label a generated record's reference gets: the calculator's class name ("EMT")."""
    return type(calculator).__name__


def _matrices(material: Material) -> tuple[np.ndarray, str | Sequence[Sequence[float]]]:
    """phonopy's supercell matrix (3, 3) and primitive matrix of a material."""
    smat = np.array(material.supercell_matrix, dtype=int)
    # phonopy reads None as "auto"; "P" is its name for the unit cell itself
    pmat = "P" if material.primitive_matrix is None else material.primitive_matrix
    return (np.diag(smat) if smat.shape == (3,) else smat), pmat


def _forces(cells: Sequence, calculator: BaseCalculator) -> np.ndarray:
    """(n, N, 3) forces of phonopy's displaced supercells from an ASE calculator."""
    forces = []
    for cell in cells:
        supercell = ase_from_phonopy(cell)
        supercell.calc = calculator
        forces.append(supercell.get_forces())
    return np.array(forces)


def generate_record(
    material: Material,
    calculator: BaseCalculator,
    folder: str | Path,
    *,
    distance: float = DISPLACEMENT,
    suffix: str = ".yaml.xz",
    temperatures: Sequence[float] = TEMPERATURES,
) -> Path:
    """Relax, displace, compute forces and write one record.

    Args:
        material: what to compute.
        calculator: any ASE calculator (used for relaxation and forces).
        folder: where the record file goes.
        distance: displacement amplitude (Å).
        suffix: ".yaml", ".yaml.xz", ".yaml.gz" or ".yaml.bz2".
        temperatures: (n_T,) K for the stored thermal properties.

    Returns:
        The record file written (atomically).
    """
    from phonopy import Phonopy
    from phonopy.phonon.thermal_properties import GammaAcousticWarning
    from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning

    if not np.all(material.atoms.pbc):
        message = f"not periodic in all directions (pbc={material.atoms.pbc.tolist()})"
        raise RecordError(None, material.id, "unit_cell", message)
    unitcell = relax(material.atoms, calculator, material.strain)
    smat, pmat = _matrices(material)
    with warnings.catch_warnings():
        # "auto" is chosen on purpose here; phonopy warns because v3 defaulted to the unit cell
        warnings.simplefilter("ignore", PrimitiveMatrixAutoDefaultWarning)
        ph = Phonopy(phonopy_from_ase(unitcell), smat, primitive_matrix=pmat)
    ph.generate_displacements(distance=distance)
    ph.forces = _forces(ph.supercells_with_displacements, calculator)
    produce_force_constants(ph)

    unitcell.calc = calculator
    energy = float(unitcell.get_potential_energy())
    ph.run_mesh(100.0)  # phonopy's default mesh, the one behind the MDR thermal properties
    with warnings.catch_warnings():
        # Gamma acoustic modes stay in the sums, as in the MDR files (phonopy's default)
        warnings.simplefilter("ignore", GammaAcousticWarning)
        ph.run_thermal_properties(temperatures=list(temperatures))
    thermal = ph.thermal_properties
    reference = {
        "temperatures": np.asarray(temperatures, dtype=float),
        "free_e": np.asarray(thermal.free_energy),
        "entropy": np.asarray(thermal.entropy),
        "heat_capacity": np.asarray(thermal.heat_capacity),
        "energy": energy,
        "volume": float(unitcell.get_volume()),
        "nsites": len(unitcell),
    }
    path = Path(folder) / f"{material.id}{suffix}"
    record = Record(
        id=material.id,
        unitcell=ase_from_phonopy(ph.unitcell),
        supercell_matrix=ph.supercell_matrix,
        primitive_matrix=ph.primitive_matrix,
        force_constants=ph.force_constants,
        dataset=ph.dataset,
        reference=reference,
        source=path,
        reference_name=reference_name(calculator),
    )
    header = (
        f"{material.id}: generated by phonon_eval.generate with {type(calculator).__name__} "
        f"(ASE), phonopy finite displacements of {distance} Å; cell relaxed ({material.strain})."
    )
    return write_record(record, path, header=header)


def generate_frames(
    materials: Sequence[Material],
    calculator: BaseCalculator,
    *,
    count: int = 12,
    max_strain: float = 0.02,
    rattle: Sequence[float] = RATTLE,
    seed: int = 0,
) -> list[Atoms]:
    """Upstream energy/force/stress frames: relaxed supercells, strained and rattled.

    Each material's unit cell is relaxed, repeated by its (diagonal) supercell matrix, given a
    random symmetric strain (components uniform in ±max_strain) and Gaussian displacements of
    the amplitudes in `rattle` in turn: the small ones sample the harmonic region that phonons
    see, the large ones the anharmonic one.

    Args:
        materials: structures; their supercell matrices must be diagonal.
        calculator: any ASE calculator with energy, forces and stress.
        count: frames per material.
        max_strain: largest strain component.
        rattle: (n,) Å, displacement standard deviations, used in turn.
        seed: random seed (the frames are a pure function of the arguments).

    Returns:
        Frames with a single-point calculator holding the results, `info["material"]` the id.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for material in materials:
        smat = np.array(material.supercell_matrix)
        if smat.ndim == 2:
            if np.count_nonzero(smat - np.diag(np.diag(smat))):
                raise ValueError(f"{material.id}: frames need a diagonal supercell matrix")
            smat = np.diag(smat)
        base = relax(material.atoms, calculator, material.strain).repeat([int(n) for n in smat])
        for k in range(count):
            strain = rng.uniform(-max_strain, max_strain, (3, 3))
            atoms = base.copy()
            atoms.set_cell(base.cell.array @ (np.eye(3) + (strain + strain.T) / 2), scale_atoms=True)
            atoms.positions += rng.normal(0.0, rattle[k % len(rattle)], atoms.positions.shape)
            atoms.calc = calculator
            results = {
                "energy": atoms.get_potential_energy(),
                "forces": atoms.get_forces(),
                "stress": atoms.get_stress(),
            }
            atoms.calc = SinglePointCalculator(atoms, **results)
            atoms.info["material"] = material.id
            frames.append(atoms)
    return frames


def write_frames(frames: Sequence[Atoms], path: str | Path) -> Path:
    """Frames as extended XYZ, compressed by the suffix (.xz, .gz, .bz2), written atomically."""
    import ase.io

    text = io.StringIO()
    ase.io.write(text, list(frames), format="extxyz")
    return write_text(path, text.getvalue())


def generate_kappa_record(
    material: Material,
    calculator: BaseCalculator,
    folder: str | Path,
    *,
    distance: float = KAPPA_DISPLACEMENT,
    suffix: str = ".yaml.xz",
) -> Path:
    """Relax, displace for fc2 and fc3 (phono3py), compute forces and write a phono3py record.

    The file is phono3py's own `phono3py_params.yaml` (cells, displacements with forces),
    compressed by the suffix; `read_record` reads it as a phono3py record, and the κ evaluator
    computes the reference κ from its forces.

    Args:
        material: what to compute; its supercell matrix is the fc3 (and fc2) supercell.
        calculator: any ASE calculator.
        folder: where the record file goes.
        distance: displacement amplitude (Å).
        suffix: ".yaml", ".yaml.xz", ".yaml.gz" or ".yaml.bz2".

    Returns:
        The record file written (atomically).
    """
    import tempfile

    from phono3py import Phono3py
    from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning

    unitcell = relax(material.atoms, calculator, material.strain)
    smat, pmat = _matrices(material)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrimitiveMatrixAutoDefaultWarning)
        ph3 = Phono3py(phonopy_from_ase(unitcell), supercell_matrix=smat, primitive_matrix=pmat)
    ph3.generate_displacements(distance=distance)
    ph3.forces = _forces(ph3.supercells_with_displacements, calculator)
    with tempfile.TemporaryDirectory() as tmp:
        ph3.save(str(Path(tmp) / "phono3py_params.yaml"))
        text = (Path(tmp) / "phono3py_params.yaml").read_text()
    header = (
        f"{material.id}: generated by phonon_eval.generate with {type(calculator).__name__} "
        f"(ASE), phono3py fc2/fc3 displacements of {distance} Å; cell relaxed ({material.strain})."
    )
    text += f"\nreference_name: {json.dumps(reference_name(calculator))}\n"
    return write_text(Path(folder) / f"{material.id}{suffix}", text, header)


def make_split(
    ids: Sequence[str], fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> dict[str, list[str]]:
    """A deterministic train/val/test split of ids.

    Args:
        ids: record ids.
        fractions: (train, val, test) fractions; test takes the remainder.
        seed: permutation seed.

    Returns:
        {"train": [...], "val": [...], "test": [...]}, each sorted.
    """
    order = np.random.default_rng(seed).permutation(sorted(ids))
    n_train = round(fractions[0] * len(order))
    n_val = round(fractions[1] * len(order))
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    names = ("train", "val", "test")
    return {name: sorted(str(i) for i in part) for name, part in zip(names, parts)}


def generate_dataset(
    materials: Sequence[Material],
    calculator: BaseCalculator,
    folder: str | Path,
    *,
    split: dict[str, list[str]] | None = None,
    distance: float = DISPLACEMENT,
    suffix: str = ".yaml.xz",
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Generate one record per material and the split file `split.json` in a folder.

    Args:
        materials: structures to compute.
        calculator: any ASE calculator.
        folder: dataset folder (created when missing); records of other ids are left alone.
        split: split name -> ids; default `make_split` of the material ids.
        distance: displacement amplitude (Å).
        suffix: record file suffix (".yaml.xz" keeps the files small).
        log: called with one line per record.

    Returns:
        The record files written.
    """
    ids = [m.id for m in materials]
    split = make_split(ids) if split is None else split
    unknown = sorted({i for part in split.values() for i in part} - set(ids))
    if unknown:
        raise ValueError(f"split names ids that are not generated: {unknown}")
    paths = []
    for material in materials:
        start = time.perf_counter()
        path = generate_record(material, calculator, folder, distance=distance, suffix=suffix)
        paths.append(path)
        if log:
            log(f"{paths[-1]} ({time.perf_counter() - start:.1f} s)")
    atomic_write(Path(folder) / "split.json", (json.dumps(split, indent=1) + "\n").encode())
    return paths


# --------------------------------------------------------------------------------------------
# the built-in EMT dataset
# --------------------------------------------------------------------------------------------

EMT_SPLIT = {
    "train": [
        "Al-fcc", "Ni-fcc", "Pd-fcc", "Au-fcc",
        "Ni3Al-L12", "Cu3Pt-L12", "Pt3Ni-L12", "Au3Cu-L12",
        "CuPt-L10",
    ],
    "val": ["Ag-fcc", "Ni3Pt-L12", "NiPd-L10"],
    "test": ["Cu-fcc", "Pt-fcc", "Cu3Au-L12", "CuAu-L10"],
}
"""Each split holds fcc metals, L1_2 and L1_0 alloys, so every part sees every structure type."""


def emt_materials() -> list[Material]:
    """The built-in EMT set: 7 fcc metals, 6 L1_2 (A3B) and 3 L1_0 (AB) ordered alloys.

    All are dynamically stable with EMT; B2 alloys (NiAl, CuPd, ...) are left out because EMT
    gives them imaginary modes. Unit cells are conventional cubes (tetragonal for L1_0), lattice
    constants are starting guesses relaxed later, supercells are 2x2x2 of the unit cell
    (32 atoms).

    Returns:
        The materials, in a fixed order.
    """
    from ase.build import bulk

    corners_faces = [(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    materials = [
        Material(f"{el}-fcc", bulk(el, "fcc", a=4.0, cubic=True), (2, 2, 2), "hydrostatic")
        for el in ("Al", "Cu", "Ni", "Pd", "Ag", "Pt", "Au")
    ]
    l12 = (("Cu", "Au"), ("Ni", "Al"), ("Cu", "Pt"), ("Ni", "Pt"), ("Pt", "Ni"), ("Au", "Cu"))
    for a, b in l12:
        # L1_2 A3B: B on the cube corners, A on the face centres
        atoms = Atoms([b, a, a, a], scaled_positions=corners_faces, cell=[3.8] * 3, pbc=True)
        materials.append(Material(f"{a}3{b}-L12", atoms, (2, 2, 2), "hydrostatic"))
    for a, b in (("Cu", "Au"), ("Cu", "Pt"), ("Ni", "Pd")):
        # L1_0 AB: alternating (001) planes of A and B; c/a relaxes away from 1
        atoms = Atoms([a, a, b, b], scaled_positions=corners_faces, cell=[3.8, 3.8, 3.9], pbc=True)
        materials.append(Material(f"{a}{b}-L10", atoms, (2, 2, 2), "diagonal"))
    return materials


def low_symmetry_materials(count: int = 8, seed: int = 0, strain: float = 0.03, rattle: float = 0.05) -> list[Material]:
    """Distorted alloys whose supercells have many classes of Hessian columns (a hard case for
    one-column probes): the L1_2 and L1_0 cells of `emt_materials`, in turn, under a random
    strain (each component uniform in ±`strain`) with every atom moved by up to `rattle` Å, and
    only the positions relaxed in that fixed cell (the strain is what keeps the symmetry low).

    Returns:
        `count` materials with ids like "Cu3Au-L12-d0", 2x2x2 supercells (32 atoms).
    """
    rng = np.random.default_rng(seed)
    alloys = [m for m in emt_materials() if "-L1" in m.id]
    out = []
    for k in range(count):
        base = alloys[k % len(alloys)]
        atoms = base.atoms.copy()
        deform = np.eye(3) + rng.uniform(-strain, strain, (3, 3))
        atoms.set_cell(atoms.cell.array @ deform, scale_atoms=True)
        atoms.positions += rng.uniform(-rattle, rattle, atoms.positions.shape)
        out.append(Material(f"{base.id}-d{k}", atoms, base.supercell_matrix, "none", None))
    return out


KAPPA_IDS = ("Cu-fcc",)
"""The κ demo: one small material (fcc Cu, 37 fc3 supercells of 32 atoms)."""

FRAME_COUNTS = {"train": (12, 0), "val": (4, 1)}
"""Upstream frames per material and seed of each part."""


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate the built-in EMT data (or some of its records) into a folder."""
    parser = argparse.ArgumentParser(
        prog="python -m phonon_eval.generate",
        description="Generate the built-in EMT data: phonon reference records (phonopy finite "
        "displacements), or with --frames the upstream energy/force/stress frames, or with "
        "--kappa the phono3py record of the κ demo.",
    )
    parser.add_argument("folder", type=Path, help="output folder: data/emt, data/emt-frames or data/emt-kappa")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--frames", action="store_true",
        help="write train.extxyz.xz and val.extxyz.xz (rattled and strained supercells of every material)",
    )
    what.add_argument("--kappa", action="store_true", help=f"write the phono3py record(s) {', '.join(KAPPA_IDS)} and split.json")
    parser.add_argument(
        "--only", nargs="+", metavar="ID", help="only these ids (split.json then lists only them)"
    )
    parser.add_argument(
        "--displacement",
        type=float,
        default=None,
        help=f"displacement amplitude in Å (default {DISPLACEMENT}, with --kappa {KAPPA_DISPLACEMENT})",
    )
    parser.add_argument(
        "--suffix",
        default=".yaml.xz",
        choices=[".yaml", ".yaml.xz", ".yaml.gz", ".yaml.bz2"],
        help="record file suffix (default %(default)s)",
    )
    args = parser.parse_args(argv)

    from ase.calculators.emt import EMT

    materials = emt_materials()
    known = [m.id for m in materials]
    selected = list(args.only) if args.only else (list(KAPPA_IDS) if args.kappa else known)
    unknown = sorted(set(selected) - set(known))
    if unknown:
        parser.error(f"unknown ids {unknown}; choose from {known}")
    materials = [m for m in materials if m.id in selected]
    start = time.perf_counter()
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    if args.frames:
        for part, (count, seed) in FRAME_COUNTS.items():
            frames = generate_frames(materials, EMT(), count=count, seed=seed)
            log(f"{write_frames(frames, args.folder / f'{part}.extxyz.xz')}: {len(frames)} frames")
        written = f"{len(FRAME_COUNTS)} frame files"
    elif args.kappa:
        distance = KAPPA_DISPLACEMENT if args.displacement is None else args.displacement
        for material in materials:
            log(str(generate_kappa_record(material, EMT(), args.folder, distance=distance, suffix=args.suffix)))
        split = {"test": [m.id for m in materials]}
        atomic_write(args.folder / "split.json", (json.dumps(split, indent=1) + "\n").encode())
        written = f"{len(materials)} phono3py records and split.json"
    else:
        split = {name: [i for i in ids if i in selected] for name, ids in EMT_SPLIT.items()}
        paths = generate_dataset(
            materials,
            EMT(),
            args.folder,
            split=split,
            distance=DISPLACEMENT if args.displacement is None else args.displacement,
            suffix=args.suffix,
            log=log,
        )
        written = f"{len(paths)} records and split.json"
    log(f"wrote {written} to {args.folder} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
