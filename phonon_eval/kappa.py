"""The thermal-conductivity evaluator: κ with phono3py from any model, and κ_SRME against DFT.

Per material (the Matbench Discovery κ protocol, Póta et al. 2024): relax the unit cell with the
model (FIRE + FrechetCellFilter + FixSymmetry), check that the space group is kept, displace
the fc2 and fc3 supercells as phono3py does (0.03 Å), get the forces of all displaced supercells
from the model's force provider (for a JAX potential, one compiled function in chunks over one
shared neighbour graph; for an ASE calculator, one structure at a time), make
fc2 and fc3 exactly as `phono3py.load` makes them from DFT forces, check for imaginary modes on
the q-mesh, and solve for κ (RTA, Wigner or LBTE) at the requested temperatures. The `fast`
protocol instead fits fc2 and fc3 with symfc to a few supercells with every atom displaced at
random (`generate_displacements`), about a tenth as many.

The reference is either given (a Matbench Discovery DFT reference file, read here) or computed
from a record's DFT forces with exactly the same phono3py calls (`reference_conductivity`).
A material with imaginary modes or a broken symmetry is not an error: its row has status
"unstable" or "symmetry broken", the reason, and the Matbench penalty (SRME = SRE = 2, SRD = -2).

`evaluate_material` is a plain function of (model, material, settings), so that it runs the
same serially or on any worker.
"""

from __future__ import annotations

import dataclasses
import gzip
import inspect
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import ase
import ase.io
import numpy as np

from phonon_eval.provenance import ProtocolSettings
from phonon_eval.provider import ForceProvider, ModelLike, as_provider
from phonon_eval.records import Record, ase_from_phonopy, phonopy_from_ase
from phonon_eval.relax import relax
from phonon_eval.symmetry import SupercellSymmetry

if TYPE_CHECKING:
    from phono3py import Phono3py
    from phonopy.structure.atoms import PhonopyAtoms

__all__ = [
    "FC3_SYMMETRIZATIONS",
    "DISPLACEMENTS",
    "KAPPA_PROTOCOLS",
    "METHODS",
    "PENALTY",
    "MIN_RANDOM_FACTOR",
    "RANDOM_FACTOR",
    "Conductivity",
    "KappaInputError",
    "KappaMaterial",
    "KappaSettings",
    "compare",
    "evaluate_material",
    "free_parameters",
    "generate_displacements",
    "imaginary_modes",
    "produce_force_constants",
    "read_matbench",
    "read_reference",
    "reference_conductivity",
    "run_conductivity",
    "srd",
    "srme",
]

METHODS = ("rta", "wigner", "lbte")
"""Relaxation-time approximation, Wigner (Simoncelli-Marzari-Mauri 2019, RTA), direct LBTE."""

PENALTY = {"srd": -2.0, "sre": 2.0, "srme": 2.0}
"""Metrics of a material without a model κ (unstable, symmetry broken, failed), as Matbench."""


class KappaInputError(ValueError):
    """A structures or reference file that cannot be used; names the file, material and field."""


KAPPA_PROTOCOLS: dict[str, dict[str, Any]] = {
    # The Matbench Discovery κ task as its published script runs it (Póta et al. 2024): FIRE +
    # FrechetCellFilter + FixSymmetry to 1e-4 eV/Å in 300 steps, symprec 1e-5, 0.03 Å
    # displacements, produce_fc2(symmetrize_fc2=True) and produce_fc3(symmetrize_fc3r=True),
    # init_phph_interaction(symmetrize_fc3q=False), Wigner RTA with isotopes and a 1 m boundary
    # mean free path, at 300 K; imaginary modes or a changed space group give the penalty.
    "matbench": {},
    # As `matbench`, but the force constants as `phono3py.load` makes them from the same
    # displacements: finite differences projected onto the symmetric subspace by symfc.
    "phono3py": {"fc_symmetrization": "symfc"},
    # Not Matbench: fc2 and fc3 fitted by symfc to a few supercells with every atom displaced
    # 0.01 Å in a random direction (± pairs), as many as the free parameters need times a
    # safety factor; benchmarks/kappa_fast.py measured both (at 0.03 Å, where every atom moving
    # brings in more anharmonicity than one pair does, κ of Si was 3 % off the pair route). The
    # reference is made as under `phono3py`.
    "fast": {"fc_symmetrization": "symfc", "displacements": "random", "displacement": 0.01},
}
"""Named, versioned κ protocols (version 1): the fields that differ from the defaults."""
KAPPA_PROTOCOL_VERSION = 1
FC3_SYMMETRIZATIONS = ("matbench", "symfc")
DISPLACEMENTS = ("pairs", "random")
MIN_RANDOM_FACTOR = 2.0
"""Fewer random supercells than this times the minimum are refused: at 1x (an overdetermined fit
by less than 2x) the study's κ of NaCl came out thousands of times too large, and Si and ZnTe
got imaginary modes."""
RANDOM_FACTOR = 2.0
"""Random fc3 supercells per the minimum that symfc's free parameters need (`fast`): the
smallest factor that kept κ within 1 % of the pair route, and the SRME against DFT within 0.01
of the pair route's, on every input and seed of the convergence study (benchmarks/kappa_fast.py:
worst 0.62 % and 0.0056 at 2x, 0.36 % and 0.0028 at 4x)."""


@dataclasses.dataclass(frozen=True)
class KappaSettings(ProtocolSettings):
    """Everything that decides the numbers; recorded in the results' attributes.

    The defaults are the `matbench` protocol; `KappaSettings.from_protocol(name, **changes)`
    starts from another one, and `overrides` names the fields that differ from it.

    Attributes:
        protocol: the named protocol these settings start from (`KAPPA_PROTOCOLS`).
        relax: relax the unit cell with the model first.
        relax_cell: relax the cell as well as the positions.
        fmax: force threshold of the relaxation, eV/Å (Matbench: 1e-4).
        relax_steps: step budget of the relaxation (Matbench: 300); not converging is recorded,
            not an error, as in Matbench.
        symprec: symmetry tolerance for FixSymmetry, the space-group check and phono3py, Å.
        displacement: finite-displacement amplitude of the fc2 and fc3 supercells, Å.
        mesh: q-point mesh; None takes each material's own (`q_mesh` of a Matbench structure).
        temperatures: K; the metrics are reported at 300 K.
        method: "rta", "wigner" (Matbench) or "lbte".
        isotope: include isotope scattering (Matbench: yes).
        boundary_mfp: boundary-scattering mean free path, µm (Matbench: 1e6), or None for none.
        imaginary_tolerance: how far below zero the acoustic modes at Γ may go, THz; every other
            mode on the q-mesh must be >= 0 (Matbench's rule).
        fc_symmetrization: "matbench" (phono3py's traditional symmetrisation of fc2 and fc3 in
            real space, as the Matbench script) or "symfc" (the symfc projector, as
            `phono3py.load`); the reference's DFT forces go through the same.
        displacements: fc3 supercells "pairs" (phono3py's one- and two-atom displacements,
            finite differences) or "random" (every atom displaced by `displacement` in a
            random direction, in ± pairs, fc2 and fc3 fitted by symfc; needs "symfc"). A
            separate fc2 supercell keeps its few systematic displacements either way.
        random_factor: random supercells as a multiple of the minimum, the free fc2 + fc3
            parameters (symfc's basis) over the 3N force components of one supercell.
        random_supercells: the number of random supercells instead (even; refused below
            `MIN_RANDOM_FACTOR` times the minimum).
        random_seed: of the random displacements.
        cutoff: fc3 pair cutoff, Å: pairs farther apart get no fc3 (fewer pair supercells, fewer
            free parameters), or None for all pairs.
        overrides: (set by the class) the fields that differ from the protocol.
    """

    PROTOCOLS: ClassVar[dict[str, dict[str, Any]]] = KAPPA_PROTOCOLS
    PROTOCOL_VERSION: ClassVar[int] = KAPPA_PROTOCOL_VERSION
    COMMAND: ClassVar[str] = "kappa"

    protocol: str = "matbench"
    relax: bool = True
    relax_cell: bool = True
    fmax: float = 1e-4
    relax_steps: int = 300
    symprec: float = 1e-5
    displacement: float = 0.03
    mesh: tuple[int, int, int] | None = None
    temperatures: tuple[float, ...] = (300.0,)
    method: str = "wigner"
    isotope: bool = True
    boundary_mfp: float | None = 1e6
    imaginary_tolerance: float = 0.01
    fc_symmetrization: str = "matbench"
    displacements: str = "pairs"
    random_factor: float = RANDOM_FACTOR
    random_supercells: int | None = None
    random_seed: int = 0
    cutoff: float | None = None
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._record_overrides()
        if self.fc_symmetrization not in FC3_SYMMETRIZATIONS:
            raise ValueError(f"fc_symmetrization must be one of {', '.join(FC3_SYMMETRIZATIONS)}, got {self.fc_symmetrization!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if 300.0 not in self.temperatures:
            raise ValueError("temperatures must include 300 K, where the metrics are taken")
        if self.mesh is not None and (len(self.mesh) != 3 or min(self.mesh) < 1):
            raise ValueError(f"mesh must be three positive integers, got {self.mesh}")
        if not 0 < self.displacement < 0.1:
            raise ValueError(f"displacement must be in (0, 0.1) Å, got {self.displacement}")
        if self.displacements not in DISPLACEMENTS:
            raise ValueError(f"displacements must be one of {', '.join(DISPLACEMENTS)}, got {self.displacements!r}")
        if self.displacements == "random" and self.fc_symmetrization != "symfc":
            raise ValueError("random displacements are fitted by symfc: use fc_symmetrization symfc (protocol fast)")
        if self.random_supercells is not None and (self.random_supercells < 2 or self.random_supercells % 2):
            raise ValueError(f"random_supercells must be even (± pairs) and at least 2, got {self.random_supercells}")
        if self.random_factor < MIN_RANDOM_FACTOR:
            raise ValueError(f"random_factor must be at least {MIN_RANDOM_FACTOR:g}, got {self.random_factor}")
        if self.cutoff is not None and self.cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {self.cutoff}")


@dataclasses.dataclass(frozen=True, eq=False)
class Conductivity:
    """Lattice thermal conductivity of one material on one q-point mesh.

    Mode values follow phono3py: each irreducible q-point carries the sum over its star, so
    kappa = mode_kappa.sum(axis=(1, 2)) / weights.sum(). "Mean" is the mean of the diagonal of
    the tensor (xx, yy, zz), the scalar Matbench Discovery compares.

    Attributes:
        temperatures: (T,) K.
        kappa: (T,) mean of the diagonal of κ, W/m-K.
        mode_kappa: (T, Q, B) mean of the diagonal of the mode κ, W/m-K.
        qpoints: (Q, 3) irreducible q-points, reduced coordinates of the primitive reciprocal cell.
        weights: (Q,) number of mesh points each irreducible q-point stands for.
        mesh: (3,) the q-point mesh.
        frequencies: (Q, B) THz, or None.
        heat_capacity: (T, Q, B) mode heat capacities, eV/K, or None.
        kappa_tensor: (T, 3, 3) W/m-K, or None (a reference file gives only the mean).
    """

    temperatures: np.ndarray
    kappa: np.ndarray
    mode_kappa: np.ndarray
    qpoints: np.ndarray
    weights: np.ndarray
    mesh: np.ndarray
    frequencies: np.ndarray | None = None
    heat_capacity: np.ndarray | None = None
    kappa_tensor: np.ndarray | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], temperatures: Any) -> Conductivity:
        """The model's conductivity of an `evaluate_material` row computed at `temperatures`."""
        return cls(
            temperatures=np.asarray(temperatures, dtype=float),
            kappa=np.asarray(row["kappa"]),
            mode_kappa=np.asarray(row["mode_kappa"]),
            qpoints=np.asarray(row["qpoint_coordinates"]),
            weights=np.asarray(row["weight"]),
            mesh=np.asarray(row["q_mesh"]),
            frequencies=np.asarray(row["frequency"]),
            kappa_tensor=np.asarray(row["kappa_tensor"]),
        )

    def __post_init__(self) -> None:
        t, q = len(self.temperatures), len(self.qpoints)
        shapes = {"kappa": (t,), "qpoints": (q, 3), "weights": (q,), "mesh": (3,)}
        for name, shape in shapes.items():
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"{name} has shape {np.shape(getattr(self, name))}, expected {shape}")
        if np.ndim(self.mode_kappa) != 3 or np.shape(self.mode_kappa)[:2] != (t, q):
            raise ValueError(f"mode_kappa has shape {np.shape(self.mode_kappa)}, expected ({t}, {q}, bands)")
        b = np.shape(self.mode_kappa)[2]
        optional = {"frequencies": (q, b), "heat_capacity": (t, q, b), "kappa_tensor": (t, 3, 3)}
        for name, shape in optional.items():
            value = getattr(self, name)
            if value is not None and np.shape(value) != shape:
                raise ValueError(f"{name} has shape {np.shape(value)}, expected {shape}")


@dataclasses.dataclass(frozen=True, eq=False)
class KappaMaterial:
    """One material to evaluate: structure, phono3py setup and where its reference comes from.

    Attributes:
        id: material id.
        unitcell: the structure to relax and displace (masses as phono3py should use them).
        fc3_supercell: (3, 3) int supercell matrix of the fc3 displacements.
        fc2_supercell: (3, 3) int supercell matrix of separate fc2 displacements, or None to take
            fc2 from the fc3 displacements (phono3py's `phonon_supercell_matrix`).
        primitive_matrix: (3, 3), or a phonopy keyword ("auto", "P", "F", ...).
        mesh: the q-point mesh given with the structure, or None.
        nac_params: phonopy NAC parameters (Born charges of the reference), or None.
        reference: the DFT conductivity, a record whose DFT forces give it, or None (κ only,
            the metrics are NaN).
        reference_name: what the reference is, for tables and plots (the record's label, or
            "Matbench Discovery PBE" for the Matbench reference file).
    """

    id: str
    unitcell: ase.Atoms
    fc3_supercell: np.ndarray
    fc2_supercell: np.ndarray | None = None
    primitive_matrix: np.ndarray | str = "auto"
    mesh: tuple[int, int, int] | None = None
    nac_params: dict[str, Any] | None = None
    reference: Conductivity | Record | None = None
    reference_name: str = "reference"

    @classmethod
    def from_record(cls, record: Record) -> KappaMaterial:
        """A record with phono3py data (fc3 supercell and dataset with DFT forces).

        Raises:
            KappaInputError: the record has no fc3 data.
        """
        if record.fc3_supercell_matrix is None:
            raise KappaInputError(f"{record.source}: material {record.id!r}: no fc3 data (not a phono3py record)")
        separate = not np.array_equal(record.supercell_matrix, record.fc3_supercell_matrix)
        return cls(
            id=record.id,
            unitcell=record.unitcell,
            fc3_supercell=record.fc3_supercell_matrix,
            fc2_supercell=record.supercell_matrix if separate else None,
            primitive_matrix=record.phonopy_primitive_matrix,
            nac_params=record.nac_params,
            reference=record,
            reference_name=record.reference_name,
        )


# --------------------------------------------------------------------------------------------
# Matbench Discovery inputs
# --------------------------------------------------------------------------------------------

# our name -> the names Matbench Discovery files have used for it (k_SRME, then matbench_discovery)
_ID_KEYS = ("mp_id", "material_id")
MATBENCH_REFERENCE_NAME = "Matbench Discovery PBE"
"""The Matbench Discovery κ reference: phono3py on PBE forces (the PhononDB-PBE set, Póta et al.)."""
_REFERENCE_KEYS = {
    "temperatures": ("temperatures",),
    "kappa": ("kappa_TOT_ave", "kappa_tot_avg"),
    "mode_kappa": ("mode_kappa_TOT_ave", "mode_kappa_tot_avg"),
    "qpoints": ("qpoints", "q_points"),
    "weights": ("weights", "mode_weights"),
    "mesh": ("q_mesh", "q_point_mesh"),
    "frequencies": ("frequencies", "ph_freqs"),
    "heat_capacity": ("heat_capacity",),
}
_OPTIONAL = ("frequencies", "heat_capacity")


def _first(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return next((mapping[k] for k in keys if k in mapping and mapping[k] is not None), None)


def read_reference(path: str | os.PathLike) -> dict[str, Conductivity]:
    """Read a Matbench Discovery DFT κ reference: pandas JSON, column orientation, gzip allowed.

    Each material has `mp_id` (or `material_id`), `temperatures`, `kappa_TOT_ave` (T,),
    `mode_kappa_TOT_ave` (T, Q, B), `qpoints` (Q, 3), `weights` (Q,), `q_mesh` (3,), and
    optionally `frequencies` (Q, B) and `heat_capacity` (T, Q, B) (the later `*_tot_avg`,
    `q_points`, `mode_weights`, `q_point_mesh` names are read as well).

    Returns:
        Conductivity per material id, in the file's order.

    Raises:
        KappaInputError: naming the file, the material and the field.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        table = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except (OSError, ValueError, EOFError) as err:
        raise KappaInputError(f"{path}: not a readable (gzipped) JSON file: {err}") from err
    if not isinstance(table, dict) or not all(isinstance(c, dict) for c in table.values()):
        raise KappaInputError(f"{path}: expected pandas' column orientation {{column: {{row: value}}}}")
    id_column = _first(table, _ID_KEYS)
    if id_column is None:
        raise KappaInputError(f"{path}: no material id column ({' or '.join(_ID_KEYS)})")
    out = {}
    for row, material in id_column.items():
        entry = {column: values.get(row) for column, values in table.items()}
        fields = {}
        for name, keys in _REFERENCE_KEYS.items():
            value = _first(entry, keys)
            if value is None and name not in _OPTIONAL:
                raise KappaInputError(f"{path}: material {material!r}, field {keys[0]!r}: missing")
            fields[name] = None if value is None else np.asarray(value, dtype=float)
        fields["weights"] = fields["weights"].astype(np.int64)
        fields["mesh"] = fields["mesh"].astype(np.int64)
        try:
            out[str(material)] = Conductivity(**fields)
        except ValueError as err:
            raise KappaInputError(f"{path}: material {material!r}: {err}") from err
    return out


def _matrix(value: Any, path: Path, material: str, field: str) -> np.ndarray:
    m = np.asarray(value, dtype=float)
    m = np.diag(m) if m.shape == (3,) else m.reshape(3, 3) if m.size == 9 else m
    if m.shape != (3, 3):
        raise KappaInputError(f"{path}: material {material!r}, field {field!r}: not a 3x3 matrix or 3 numbers")
    return m


def read_matbench(structures: str | os.PathLike, reference: str | os.PathLike) -> list[KappaMaterial]:
    """Read Matbench Discovery κ inputs: an extxyz of structures and the DFT reference file.

    Each structure's `info` holds `mp_id` (or `material_id`), `fc2_supercell` and
    `fc3_supercell` (3x3, 9 or 3 numbers), `q_mesh` (or `q_point_mesh`) and optionally
    `primitive_matrix` (default "auto"). As in Matbench, the atoms get phonopy's standard masses
    and fc2 always comes from its own displacements of the fc2 supercell.

    Returns:
        The materials in the order of the structures file, each with its reference.

    Raises:
        KappaInputError: unreadable file, missing field, or a structure without a reference.
    """
    from phonopy.structure.atoms import PhonopyAtoms

    structures = Path(structures)
    references = read_reference(reference)
    try:
        images = ase.io.read(structures, index=":", format="extxyz")
    except Exception as err:  # ase raises many kinds for a bad file
        raise KappaInputError(f"{structures}: not a readable extxyz file: {err}") from err
    materials = []
    for k, atoms in enumerate(images):
        material = _first(atoms.info, _ID_KEYS)
        if material is None:
            raise KappaInputError(f"{structures}: structure {k}: no {' or '.join(_ID_KEYS)} in info")
        material = str(material)
        missing = [f for f in ("fc2_supercell", "fc3_supercell") if f not in atoms.info]
        mesh = _first(atoms.info, ("q_mesh", "q_point_mesh"))
        if missing or mesh is None:
            field = missing[0] if missing else "q_mesh"
            raise KappaInputError(f"{structures}: material {material!r}, field {field!r}: missing")
        if material not in references:
            raise KappaInputError(f"{structures}: material {material!r} has no entry in {reference}")
        fc3, fc2 = (np.rint(_matrix(atoms.info[f], structures, material, f)).astype(int) for f in ("fc3_supercell", "fc2_supercell"))
        pmat = atoms.info.get("primitive_matrix", "auto")
        if not isinstance(pmat, str):
            pmat = _matrix(pmat, structures, material, "primitive_matrix")
        standard = PhonopyAtoms(symbols=list(atoms.symbols), cell=np.eye(3), scaled_positions=np.zeros((len(atoms), 3)))
        atoms.set_masses(standard.masses)
        materials.append(
            KappaMaterial(
                id=material,
                unitcell=atoms,
                fc3_supercell=fc3,
                fc2_supercell=fc2,
                primitive_matrix=pmat,
                mesh=tuple(int(n) for n in np.asarray(mesh).ravel()),
                reference=references[material],
                reference_name=MATBENCH_REFERENCE_NAME,
            )
        )
    return materials


# --------------------------------------------------------------------------------------------
# phono3py
# --------------------------------------------------------------------------------------------


def produce_force_constants(ph3: Phono3py, symmetrization: str = "symfc", cutoff: float | None = None) -> None:
    """fc3 and fc2 from the displacement datasets with forces (fc3 pairs within `cutoff` Å only).

    "symfc": as `phono3py.load` makes them, finite differences then the symfc projector (symfc
    itself for random-displacement datasets). "matbench": as the Matbench Discovery script,
    `produce_fc3(symmetrize_fc3r=True)` and `produce_fc2(symmetrize_fc2=True)`, phono3py's
    traditional real-space symmetrisation, written as phono3py 4 asks (those keywords are
    deprecated: produce, then symmetrize). fc2 comes from the fc3 displacements unless the fc2
    supercell is separate.
    """
    if symmetrization == "matbench":
        ph3.produce_fc3()
        ph3.symmetrize_fc3()
        if ph3.phonon_supercell_matrix is not None:
            ph3.produce_fc2()
        ph3.symmetrize_fc2()
        return

    def calculator(dataset: dict[str, Any]) -> str | None:
        return "symfc" if "displacements" in dataset else None

    fc3 = calculator(ph3.dataset)
    # symfc reads the cutoff from its options, not from the dataset ("fc2 options|fc3 options")
    options = None if fc3 is None or cutoff is None else f"|cutoff = {cutoff}"
    ph3.produce_fc3(fc_calculator=fc3, fc_calculator_options=options)
    if fc3 is None:
        ph3.symmetrize_fc3(use_symfc_projector=True)
    if ph3.phonon_supercell_matrix is None:
        if fc3 is None:
            ph3.symmetrize_fc2(use_symfc_projector=True)
        return
    fc2 = calculator(ph3.phonon_dataset)
    ph3.produce_fc2(fc_calculator=fc2)
    if fc2 is None:
        ph3.symmetrize_fc2(use_symfc_projector=True)


def free_parameters(ph3: Phono3py, cutoff: float | None = None) -> int:
    """The fc2 + fc3 parameters symfc fits to the fc3 supercells' forces (its basis sizes)."""
    from phonopy.interface.symfc import SymfcFCSolver

    options = None if cutoff is None else {"cutoff": {3: cutoff}}
    sizes = SymfcFCSolver(ph3.supercell, symmetry=ph3.symmetry, options=options).estimate_basis_size(orders=[2, 3])
    return int(sum(sizes.values()))


def generate_displacements(ph3: Phono3py, settings: KappaSettings) -> int:
    """Displace the fc3 (and a separate fc2) supercells as `settings` says.

    Returns:
        The free fc2 + fc3 parameters of a random set (0 for pairs, fitted by finite differences).

    Raises:
        ValueError: fewer random supercells than `MIN_RANDOM_FACTOR` times the minimum that
            the free parameters need: symfc would return a bad fit without saying so.
    """
    if settings.displacements == "pairs":
        ph3.generate_displacements(distance=settings.displacement, cutoff_pair_distance=settings.cutoff)
        return 0
    n_params = free_parameters(ph3, settings.cutoff)
    per_supercell = 3 * len(ph3.supercell)
    minimum = -(-n_params // per_supercell)
    n = settings.random_supercells or 2 * math.ceil(settings.random_factor * minimum / 2)
    fewest = 2 * math.ceil(MIN_RANDOM_FACTOR * minimum / 2)
    if n < fewest:
        raise ValueError(
            f"{n} random supercells give {n * per_supercell} force components for {n_params} free fc2 + fc3 "
            f"parameters: at least {fewest} supercells are needed ({MIN_RANDOM_FACTOR:g}x the {minimum} that the "
            f"parameters need; with fewer, symfc's fit gave imaginary modes or a κ off by orders of magnitude)"
        )
    # ± pairs: the odd-order error of each displacement cancels in fc3, as in the pair route
    ph3.generate_displacements(
        distance=settings.displacement, number_of_snapshots=n // 2, random_seed=settings.random_seed,
        is_plusminus=True, cutoff_pair_distance=settings.cutoff,
    )
    return n_params


def run_conductivity(ph3: Phono3py, settings: KappaSettings) -> Conductivity:
    """κ on `ph3`'s mesh by `settings.method`; the one place that knows phono3py's API versions.

    phono3py with a `transport_type` argument (4.x) names the Wigner method "smm19" and returns
    the band-pair matrix `mode_kappa_matrix` (intra-band terms on its diagonal); earlier versions
    take `conductivity_type="wigner"` and return `mode_kappa_P_RTA` and `mode_kappa_C`. The
    Wigner band-pair terms go to single modes as Matbench Discovery does: pair (b, b') adds
    2 C_b / (C_b + C_b') of its value to mode b'.

    Args:
        ph3: with fc2, fc3 and `mesh_numbers` set and `init_phph_interaction()` done.
        settings: method, temperatures, isotope and boundary scattering.

    Returns:
        The conductivity at `settings.temperatures` on the irreducible q-points.
    """
    new_api = "transport_type" in inspect.signature(ph3.run_thermal_conductivity).parameters
    options: dict[str, Any] = {"is_LBTE": settings.method == "lbte"}
    if settings.method == "wigner":
        options.update({"transport_type": "smm19"} if new_api else {"conductivity_type": "wigner"})
    ph3.run_thermal_conductivity(
        temperatures=np.asarray(settings.temperatures, dtype=float),
        is_isotope=settings.isotope,
        boundary_mfp=settings.boundary_mfp,
        **options,
    )
    calc = ph3.thermal_conductivity
    heat_capacity = np.asarray(calc.mode_heat_capacities)  # (T, Q, B)
    if settings.method != "wigner":
        kappa6, mode6 = calc.kappa[0], calc.mode_kappa[0]  # first (only) smearing width
    else:
        if new_api:
            kappa6, pairs = calc.kappa[0], np.array(calc.mode_kappa_matrix[0])
        else:
            kappa6, pairs = calc.kappa_TOT_RTA[0], np.array(calc.mode_kappa_C[0])
            b = np.arange(pairs.shape[2])
            pairs[:, :, b, b] += calc.mode_kappa_P_RTA[0]
        cv = heat_capacity[:, :, :, None, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = 2 * cv / (cv + heat_capacity[:, :, None, :, None])
        mode6 = np.nan_to_num(pairs * share).sum(axis=2)  # modes without heat capacity: 0
    kappa6, mode6 = np.asarray(kappa6), np.asarray(mode6)
    return Conductivity(
        temperatures=np.asarray(settings.temperatures, dtype=float),
        kappa=kappa6[:, :3].mean(axis=-1),
        mode_kappa=mode6[..., :3].mean(axis=-1),
        qpoints=np.asarray(calc.qpoints, dtype=float),
        weights=np.asarray(calc.grid_weights, dtype=np.int64),
        mesh=np.asarray(ph3.mesh_numbers, dtype=np.int64),
        frequencies=np.asarray(calc.frequencies, dtype=float),
        heat_capacity=heat_capacity,
        kappa_tensor=_voigt_to_tensor(kappa6),
    )


def _voigt_to_tensor(kappa6: np.ndarray) -> np.ndarray:
    """phono3py's (..., 6) in the order xx, yy, zz, yz, xz, xy to (..., 3, 3)."""
    i, j = np.array([0, 1, 2, 1, 0, 0]), np.array([0, 1, 2, 2, 2, 1])
    out = np.zeros(kappa6.shape[:-1] + (3, 3))
    out[..., i, j] = kappa6
    out[..., j, i] = kappa6
    return out


def reference_conductivity(
    material: KappaMaterial, mesh: tuple[int, int, int], settings: KappaSettings
) -> Conductivity:
    """The material's DFT conductivity: as given, or from its record's DFT forces on `mesh`.

    From a record, fc2 and fc3 are made and κ is solved with the same calls as for the model.

    Raises:
        KappaInputError: the material has no reference.
    """
    if isinstance(material.reference, Conductivity):
        return material.reference
    if not isinstance(material.reference, Record):
        raise KappaInputError(f"material {material.id!r} has no reference")
    ph3 = material.reference.to_phono3py(produce_fc=False)
    produce_force_constants(ph3, settings.fc_symmetrization, settings.cutoff)
    ph3.mesh_numbers = list(mesh)
    ph3.init_phph_interaction()
    return run_conductivity(ph3, settings)


def imaginary_modes(frequencies: np.ndarray, addresses: np.ndarray, tolerance: float) -> tuple[float, str]:
    """The lowest frequency, and why the spectrum counts as unstable ('' if not), by Matbench's rule.

    The three acoustic modes at Γ may go down to -tolerance (numerical noise); every other mode
    on the mesh must be >= 0.

    Args:
        frequencies: (n_grid, B) THz at every grid point of the mesh.
        addresses: (n_grid, 3) int grid addresses; Γ is the all-zero one.
        tolerance: THz.

    Returns:
        The lowest frequency apart from the acoustic modes at Γ (THz), and the reason.
    """
    gamma = np.flatnonzero(np.all(addresses == 0, axis=1))[0]
    acoustic = frequencies[gamma, :3].min()
    others = np.concatenate([np.delete(frequencies, gamma, axis=0).ravel(), frequencies[gamma, 3:]])
    lowest = float(others.min(initial=np.inf))
    if lowest < 0:
        return lowest, f"imaginary modes: lowest frequency {lowest:.4f} THz (acoustic modes at Γ excluded)"
    if acoustic < -tolerance:
        return lowest, f"imaginary acoustic modes at Γ: {acoustic:.4f} THz, below -{tolerance} THz"
    return lowest, ""


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def srd(kappa: np.ndarray, kappa_ref: np.ndarray) -> np.ndarray:
    """Symmetric relative difference 2 (κ - κ_ref) / (κ + κ_ref); SRE is its absolute value.

    Args:
        kappa, kappa_ref: (T,) W/m-K.
    """
    kappa, kappa_ref = np.asarray(kappa, dtype=float), np.asarray(kappa_ref, dtype=float)
    return 2 * (kappa - kappa_ref) / (kappa + kappa_ref)


def srme(
    mode_kappa: np.ndarray, mode_kappa_ref: np.ndarray, weights: np.ndarray, kappa: np.ndarray, kappa_ref: np.ndarray
) -> np.ndarray:
    """Mode-resolved symmetric relative mean error, as Matbench Discovery defines it.

    SRME = 2 Σ_modes |κ_mode - κ_mode,ref| / Σ weights / (κ + κ_ref), with mode and total κ the
    means of the diagonal; over- and under-predicted modes cannot cancel.

    Args:
        mode_kappa, mode_kappa_ref: (T, Q, B) W/m-K on the same q-points, phono3py's
            convention (each irreducible q-point carries its star).
        weights: (Q,) q-point weights.
        kappa, kappa_ref: (T,) W/m-K.

    Returns:
        (T,) SRME: 0 for perfect agreement, at most 2 for non-negative mode κ.
    """
    error = np.abs(np.asarray(mode_kappa) - np.asarray(mode_kappa_ref)).sum(axis=(1, 2))
    return 2 * error / np.sum(weights) / (np.asarray(kappa) + np.asarray(kappa_ref))


def _match_qpoints(ours: Conductivity, ref: Conductivity) -> np.ndarray | None:
    """Index into ref of each of our q-points (equal modulo a reciprocal lattice vector, equal
    weight), or None when the two sets of q-points or band counts differ."""
    if len(ours.qpoints) != len(ref.qpoints) or ours.mode_kappa.shape[2] != ref.mode_kappa.shape[2]:
        return None
    delta = ours.qpoints[:, None, :] - ref.qpoints[None, :, :]
    same = np.abs(delta - np.rint(delta)).max(axis=-1) < 1e-6
    if not np.all(same.sum(axis=1) == 1):
        return None
    order = same.argmax(axis=1)
    if len(set(order.tolist())) != len(order) or not np.array_equal(ours.weights, ref.weights[order]):
        return None
    return order


def _kappa_ref(ref: Conductivity | None, temperatures: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """κ_ref at each temperature (NaN where the reference has none), the index into the
    reference's temperatures, and whether each temperature is there."""
    pick = np.zeros(len(temperatures), dtype=int)
    have = np.zeros(len(temperatures), dtype=bool)
    if ref is None:
        return np.full(len(temperatures), np.nan), pick, have
    for k, t in enumerate(temperatures):
        hit = np.flatnonzero(np.isclose(ref.temperatures, t))
        if len(hit):
            pick[k], have[k] = hit[0], True
    return np.where(have, ref.kappa[pick], np.nan), pick, have


def compare(ours: Conductivity, ref: Conductivity | None) -> dict[str, Any]:
    """κ, κ_ref, SRD, SRE, SRME at our temperatures and the mode data, as part of a result row.

    Mode κs are compared mode by mode when both sides have the same irreducible q-points (same
    mesh and symmetry; matched by coordinates, in any order). Otherwise SRME is NaN and `note`
    says why: κs on different meshes are not compared mode by mode. Temperatures missing from
    the reference, or no reference at all, give NaN.
    """
    kappa_ref, pick, have = _kappa_ref(ref, ours.temperatures)
    order = None if ref is None else _match_qpoints(ours, ref)
    mode_ref = np.full(ours.mode_kappa.shape, np.nan)
    freq_ref = np.full(ours.mode_kappa.shape[1:], np.nan)
    note = ""
    if ref is None:
        note = "no reference: κ only"
    elif order is None:
        mesh, mesh_ref = ("x".join(map(str, m)) for m in (ours.mesh, ref.mesh))
        note = f"reference q-points ({mesh_ref} mesh) differ from the model's ({mesh}): SRME not computed"
    else:
        mode_ref = np.where(have[:, None, None], ref.mode_kappa[pick][:, order], np.nan)
        if ref.frequencies is not None:
            freq_ref = ref.frequencies[order]
    tensor_ref = np.full((len(have), 3, 3), np.nan)
    if ref is not None and ref.kappa_tensor is not None:
        tensor_ref = np.where(have[:, None, None], ref.kappa_tensor[pick], np.nan)
    d = srd(ours.kappa, kappa_ref)
    return {
        "kappa": ours.kappa,
        "kappa_ref": kappa_ref,
        "kappa_tensor": ours.kappa_tensor,
        "kappa_tensor_ref": tensor_ref,
        "srd": d,
        "sre": np.abs(d),
        "srme": srme(ours.mode_kappa, mode_ref, ours.weights, ours.kappa, kappa_ref),
        "note": note,
        "q_mesh": ours.mesh,
        "qpoint_coordinates": ours.qpoints,
        "weight": ours.weights,
        "frequency": ours.frequencies,
        "frequency_ref": freq_ref,
        "mode_kappa": ours.mode_kappa,
        "mode_kappa_ref": mode_ref,
    }


# --------------------------------------------------------------------------------------------
# the evaluator
# --------------------------------------------------------------------------------------------


def _forces(provider: ForceProvider, supercell: PhonopyAtoms, displaced: list[PhonopyAtoms]) -> np.ndarray:
    """Forces (n, N, 3) eV/Å of all displaced supercells."""
    return provider.forces(ase_from_phonopy(supercell), np.array([s.positions for s in displaced]))


def _penalised(row: dict[str, Any], status: str, reason: str, n_temperatures: int) -> dict[str, Any]:
    row.update(status=status, error=reason)
    row.update({name: np.full(n_temperatures, value) for name, value in PENALTY.items()})
    return row


def evaluate_material(
    model: ModelLike, material: KappaMaterial, settings: KappaSettings = KappaSettings()
) -> dict[str, Any]:
    """κ of one material with a model, and its errors against the DFT reference.

    Args:
        model: a checkpoint path, `Potential`, ASE calculator or `ForceProvider`.
        material: the structure, its phono3py set-up and its reference.
        settings: the protocol.

    Raises whatever goes wrong (unknown element, no mesh, bad record): the caller records the
    failure and goes on with the other materials. Imaginary modes and a space group lost in the
    relaxation are results, not errors: status "unstable" / "symmetry broken", the reason, no
    model κ, and the Matbench penalty (SRME = SRE = 2, SRD = -2).

    Returns:
        A result row: scalars, (T,) metrics, (T, 3, 3) tensors and the mode data on the
        irreducible q-points, model and `_ref` side by side (see `kappa_results` for names and
        units).
    """
    from phono3py import Phono3py

    provider = as_provider(model)
    provider.check_elements(material.unitcell.numbers)  # fail early, naming the unknown element
    mesh = settings.mesh or material.mesh
    if mesh is None:
        raise ValueError("no q-point mesh: the material carries none, so one must be given (--mesh)")
    n_t = len(settings.temperatures)
    times: dict[str, float] = {}
    last = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        times[f"time_{name}"], last = now - last, now

    ref = None if material.reference is None else reference_conductivity(material, tuple(mesh), settings)
    tick("reference")
    unitcell, steps, converged = material.unitcell, 0, True
    if settings.relax:
        relaxed = relax(
            provider, unitcell, fmax=settings.fmax, steps=settings.relax_steps,
            symprec=settings.symprec, relax_cell=settings.relax_cell,
        )
        unitcell, steps, converged = relaxed.atoms, relaxed.steps, relaxed.converged
    tick("relax")
    row: dict[str, Any] = {
        "material": material.id,
        "status": "ok",
        "error": "",
        "formula": unitcell.symbols.formula.reduce()[0].format("metal"),
        "reference_name": "" if material.reference is None else material.reference_name,
        "volume": float(unitcell.get_volume()),
        "volume_input": float(material.unitcell.get_volume()),
        "relax_steps": steps,
        "relax_converged": int(converged),
        "space_group_number": SupercellSymmetry.from_atoms(material.unitcell, settings.symprec).number,
        "space_group_number_relaxed": SupercellSymmetry.from_atoms(unitcell, settings.symprec).number,
        "kappa_ref": _kappa_ref(ref, np.asarray(settings.temperatures))[0],
        **times,
    }
    if row["space_group_number_relaxed"] != row["space_group_number"]:
        reason = f"space group {row['space_group_number']} became {row['space_group_number_relaxed']} in the relaxation"
        return _penalised(row, "symmetry broken", reason, n_t)

    ph3 = Phono3py(
        phonopy_from_ase(unitcell),
        supercell_matrix=material.fc3_supercell,
        primitive_matrix=material.primitive_matrix,
        phonon_supercell_matrix=material.fc2_supercell,
        symprec=settings.symprec,
    )
    ph3.nac_params = material.nac_params
    n_params = generate_displacements(ph3, settings)
    separate = material.fc2_supercell is not None
    row.update(
        n_primitive_atoms=len(ph3.primitive),
        n_supercell_atoms=len(ph3.supercell),
        n_fc2_supercells=len(ph3.phonon_supercells_with_displacements) if separate else 0,
        n_fc3_supercells=len(ph3.supercells_with_displacements),
        n_fc_parameters=n_params or -1,
    )
    tick("setup")
    if separate:
        displaced = ph3.phonon_supercells_with_displacements
        ph3.phonon_forces = _forces(provider, ph3.phonon_supercell, displaced)
    tick("fc2")
    ph3.forces = _forces(provider, ph3.supercell, ph3.supercells_with_displacements)
    tick("fc3")
    produce_force_constants(ph3, settings.fc_symmetrization, settings.cutoff)
    tick("force_constants")
    ph3.mesh_numbers = list(mesh)
    ph3.init_phph_interaction()
    ph3.run_phonon_solver()
    frequencies, _, addresses = ph3.get_phonon_data()
    row["min_frequency"], reason = imaginary_modes(frequencies, addresses, settings.imaginary_tolerance)
    if reason:
        tick("conductivity")
        row.update(times)
        return _penalised(row, "unstable", reason, n_t)
    ours = run_conductivity(ph3, settings)
    tick("conductivity")
    row.update(times)
    row.update(compare(ours, ref))
    return row
