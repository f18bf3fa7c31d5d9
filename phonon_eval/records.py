"""Records: one material's reference phonon data, read from MDR, phonopy and phono3py files.

A `Record` holds the unit cell, the supercell and primitive matrices, the harmonic force
constants (always FULL, (N_sc, N_sc, 3, 3) in eV/Å², in phonopy's supercell atom order) and/or
the displacement dataset they come from, NAC parameters, and reference values stored with it.

`read_record(path)` reads, dispatching on what it finds:

- a phonopy yaml file, plain or compressed (.xz/.lzma, .gz, .bz2, recognised by content):
  an MDR phonon-database file (phonopy yaml with extra keys, see `MDR_REFERENCE_KEYS`) or a
  `phonopy_params.yaml`;
- a phono3py yaml file with its forces (`phono3py_params*.yaml[.xz]`);
- a folder in phonopy or phono3py layout, first match wins: `phono3py_params*.yaml*`,
  `phono3py_disp.yaml` + `FORCES_FC3` [+ `FORCES_FC2`], `phonopy_params*.yaml*`,
  `phonopy_disp.yaml` + `FORCE_SETS`, or a single other `*.yaml*` file; a `BORN` file in the
  folder takes priority over NAC parameters in the yaml, as in `phonopy.load`.

For phono3py data the fc2 comes from the fc3 dataset (its single displacements), as phono3py
does when no separate phonon supercell is given; fc3 is never computed at read time:
`Record.to_phono3py()` does it on request.

Every problem found while reading raises `RecordError` naming the file, the material id and
the field. The readers never call `phonopy.load`/`phono3py.load`, which would silently pick up
FORCE_SETS, BORN or FORCE_CONSTANTS files from the current directory.
"""

from __future__ import annotations

import bz2
import copy
import dataclasses
import functools
import gzip
import json
import lzma
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import yaml
from ase import Atoms
from ase.data import atomic_numbers

from phonon_eval.atomic import atomic_write

if TYPE_CHECKING:
    import phono3py
    import phonopy
    from phonopy.structure.atoms import PhonopyAtoms

__all__ = [
    "FC_SYMMETRIZATIONS",
    "MDR_REFERENCE_KEYS",
    "Record",
    "RecordError",
    "RecordWarning",
    "ase_from_phonopy",
    "is_yaml_name",
    "phonopy_from_ase",
    "produce_force_constants",
    "read_record",
    "record_id",
    "symmetrize",
    "write_record",
    "write_text",
]

try:  # the C loader parses a 700 kB MDR file many times faster
    _YamlLoader: type = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _YamlLoader = yaml.SafeLoader

SYMPREC = 1e-5
"""Symmetry tolerance for phonopy (Å), phonopy's default and the one the MDR files record."""

MDR_REFERENCE_KEYS: dict[str, str] = {
    "temperatures": "K",
    "free_e": "kJ/mol",
    "entropy": "J/K/mol",
    "heat_capacity": "J/K/mol",
    "phonon_freq": "THz",
    "group_velocities": "THz*Angstrom",
    "energy": "eV",
    "volume": "Angstrom^3",
    "nsites": "1",
}
"""Reference values kept from MDR files, with their units.

`temperatures` (n_T,); `free_e` (Helmholtz free energy), `entropy`, `heat_capacity` (C_V):
(n_T,), per mole of primitive cells as phonopy reports them, computed by phonopy on its default
mesh (`run_mesh(100)`; reproduced to 1e-5 for mp-149). `phonon_freq` (n_q, 3 n_prim) and
`group_velocities` (n_q, 3 n_prim, 3) on a Gamma-centred q-mesh of the primitive cell (for
mp-149, 2x2x2 in phonopy's grid order). `energy`: DFT total energy of the unit cell, `volume`:
of the unit cell, `nsites`: atoms in the unit cell.
"""

_THERMAL_KEYS = ("free_e", "entropy", "heat_capacity")
_NOT_DFT = ("lammps", "dftbp")  # phonopy's calculators that are not DFT codes
_COMPRESSED_SUFFIXES = (".xz", ".lzma", ".gz", ".bz2")
_YAML_SUFFIXES = (".yaml", ".yml")


class RecordError(ValueError):
    """A record that cannot be read or is inconsistent; names the file, material and field."""

    def __init__(
        self, file: str | os.PathLike | None, material: str | None, field: str, message: str
    ):
        self.file = None if file is None else Path(file)
        self.material = material
        self.field = field
        self.message = message
        where = self.file or "<memory>"
        super().__init__(f"{where}: material {material!r}, field {field!r}: {message}")

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # rebuilt from its four parts, so it survives pickling (e.g. back from a dask worker)
        return type(self), (self.file, self.material, self.field, self.message)


# --------------------------------------------------------------------------------------------
# the record
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Record:
    """One material: structure, supercell setup, harmonic force constants and reference values.

    Args:
        id: material id (file stem or folder name, e.g. "mp-149").
        unitcell: unit cell with masses (amu), periodic in all three directions.
        supercell_matrix: (3, 3) int, supercell = supercell_matrix applied to the unit cell
            vectors (phonopy convention); for phono3py data the fc2 (phonon) supercell.
        primitive_matrix: (3, 3) float (phonopy convention) or None for the unit cell itself.
        force_constants: (N_sc, N_sc, 3, 3) eV/Å², full form, phonopy's supercell atom order;
            None when only the displacement dataset is stored.
        dataset: phonopy displacement dataset (type 1: {"natom", "first_atoms"}, type 2:
            {"displacements", "forces"}; Å and eV/Å), or None.
        nac_params: phonopy NAC parameters {"born": (n_prim, 3, 3), "dielectric": (3, 3),
            "factor": float}, or None.
        reference: reference values stored with the record (see `MDR_REFERENCE_KEYS`).
        source: the file or folder the record was read from.
        fc3_supercell_matrix: (3, 3) int, the phono3py fc3 supercell, or None.
        fc3_dataset: the phono3py fc3 displacement dataset with forces, or None.
        reference_name: what the reference is, for tables and plots ("MDR PBE", "DFT", "EMT").
            The readers take a file's top-level `reference_name` key, else "MDR PBE" for an MDR
            file (it stores `phonon_freq`), else "DFT" with the calculator phonopy's header
            names, e.g. "DFT (aims)": what phonopy and phono3py files hold by convention.
    """

    id: str
    unitcell: Atoms
    supercell_matrix: np.ndarray
    primitive_matrix: np.ndarray | None = None
    force_constants: np.ndarray | None = None
    dataset: dict[str, Any] | None = None
    nac_params: dict[str, Any] | None = None
    reference: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: Path | None = None
    fc3_supercell_matrix: np.ndarray | None = None
    fc3_dataset: dict[str, Any] | None = None
    reference_name: str = "reference"

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        if self.source is not None:
            set_("source", Path(self.source))
        if not isinstance(self.id, str) or not self.id:
            self._fail("id", f"must be a non-empty string, got {self.id!r}")
        if not isinstance(self.unitcell, Atoms) or len(self.unitcell) == 0:
            self._fail("unit_cell", "must be a non-empty ase.Atoms")
        if not np.all(self.unitcell.pbc):
            pbc = self.unitcell.pbc.tolist()
            self._fail("unit_cell", f"not periodic in all directions (pbc={pbc})")
        _check_lattice(np.asarray(self.unitcell.cell), lambda m: self._fail("unit_cell.lattice", m))
        set_("supercell_matrix", self._int_matrix(self.supercell_matrix, "supercell_matrix"))
        if self.primitive_matrix is not None:
            pmat = np.array(self.primitive_matrix, dtype=float)
            if pmat.shape != (3, 3) or not np.all(np.isfinite(pmat)) or np.linalg.det(pmat) <= 1e-8:
                self._fail("primitive_matrix", "must be a (3, 3) matrix with positive determinant")
            set_("primitive_matrix", None if np.allclose(pmat, np.eye(3)) else pmat)
        if self.fc3_supercell_matrix is not None:
            smat3 = self._int_matrix(self.fc3_supercell_matrix, "fc3_supercell_matrix")
            set_("fc3_supercell_matrix", smat3)
        if (self.fc3_supercell_matrix is None) != (self.fc3_dataset is None):
            self._fail("fc3_dataset", "the fc3 supercell matrix and the fc3 dataset come together")
        n_sc = self.n_supercell_atoms
        if self.force_constants is not None:
            fc = np.array(self.force_constants, dtype=float)
            if fc.shape != (n_sc, n_sc, 3, 3):
                self._fail(
                    "force_constants",
                    f"shape {fc.shape} does not match the supercell of {n_sc} atoms "
                    f"(expected {(n_sc, n_sc, 3, 3)})",
                )
            if not np.all(np.isfinite(fc)):
                self._fail("force_constants", "contains NaN or infinite values")
            set_("force_constants", fc)
        if self.dataset is not None:
            _check_dataset(self.dataset, n_sc, lambda m: self._fail("dataset", m))
        if self.force_constants is None and not _has_forces(self.dataset):
            self._fail("force_constants", "neither force constants nor a dataset with forces")
        if self.nac_params is not None:
            _check_nac(self.nac_params, self.n_primitive_atoms, lambda f, m: self._fail(f, m))
        set_("reference", dict(self.reference))
        if not isinstance(self.reference_name, str) or not self.reference_name.strip() or "\n" in self.reference_name:
            self._fail("reference_name", f"must be a one-line non-empty string, got {self.reference_name!r}")

    # -- small derived quantities --------------------------------------------------------------

    @property
    def formula(self) -> str:
        """Reduced chemical formula, e.g. "Si", "NaCl", "Al2O3"."""
        return self.unitcell.symbols.formula.reduce()[0].format("metal")

    @property
    def n_supercell_atoms(self) -> int:
        """Number of atoms in the (fc2) supercell."""
        return len(self.unitcell) * round(abs(np.linalg.det(self.supercell_matrix)))

    @property
    def n_primitive_atoms(self) -> int:
        """Number of atoms in the primitive cell."""
        det = 1.0 if self.primitive_matrix is None else np.linalg.det(self.primitive_matrix)
        return round(len(self.unitcell) * det)

    @property
    def phonopy_primitive_matrix(self) -> np.ndarray | str:
        """The primitive matrix to hand to phonopy/phono3py: "P" for the unit cell itself.

        phonopy >= 4 reads `primitive_matrix=None` as "auto" (search by symmetry), so None must
        not be passed on as it is.
        """
        return "P" if self.primitive_matrix is None else self.primitive_matrix

    @functools.cached_property
    def space_group(self) -> tuple[str, int]:
        """International symbol and number of the supercell's space group (phonopy's symmetry)."""
        dataset = self._phonopy_without_fc().symmetry.dataset
        return str(dataset.international), int(dataset.number)

    # -- structures and phonopy objects -------------------------------------------------------

    def supercell(self) -> Atoms:
        """The supercell, built by phonopy so that the atom order is phonopy's.

        Returns:
            ase.Atoms with N_sc atoms, masses as in the unit cell.
        """
        from phonopy.structure.cells import get_supercell

        unitcell = phonopy_from_ase(self.unitcell)
        cell = get_supercell(unitcell, self.supercell_matrix, symprec=SYMPREC)
        return ase_from_phonopy(cell)

    def to_phonopy(self, symmetrization: str = "symfc", remove_drift: bool = False, *, symmetry: bool = True) -> phonopy.Phonopy:
        """A `phonopy.Phonopy` with full force constants and NAC parameters set.

        Stored force constants are used as they are (the record's author made them: MDR's
        went through the MDR pipeline); otherwise they are produced from the dataset by
        `produce_force_constants` with `symmetrization` and `remove_drift` (the defaults are
        what `phonopy.load` does).

        `symmetry=False` skips phonopy's symmetry search (seconds for a 250-atom supercell)
        for callers that need only the cells and stored force constants; force constants
        produced from a dataset always use it.

        Returns:
            phonopy.Phonopy; `force_constants` (N_sc, N_sc, 3, 3) eV/Å².
        """
        ph = self._phonopy_without_fc(symmetry or self.force_constants is None)
        if self.dataset is not None:
            ph.dataset = copy.deepcopy(self.dataset)
        if self.force_constants is not None:
            ph.force_constants = self.force_constants.copy()
        else:
            produce_force_constants(ph, symmetrization, remove_drift)
        return ph

    def full_force_constants(self) -> np.ndarray:
        """The force constants, stored or produced by phonopy from the dataset.

        Returns:
            (N_sc, N_sc, 3, 3) eV/Å².
        """
        if self.force_constants is not None:
            return self.force_constants.copy()
        return np.asarray(self.to_phonopy().force_constants)

    def to_phono3py(self, produce_fc: bool = True) -> phono3py.Phono3py:
        """A `phono3py.Phono3py` for a record read from phono3py data, fc3 produced on request.

        Args:
            produce_fc: produce fc3 (and fc2 when not stored) from the datasets as
                `phono3py.load` does; False returns the object with only the datasets set.

        Returns:
            phono3py.Phono3py with datasets, NAC parameters and, with `produce_fc`, compact fc3
            (n_prim, N3, N3, 3, 3, 3) and full fc2 (N_sc, N_sc, 3, 3) in eV/Å³ and eV/Å².
        """
        if self.fc3_dataset is None or self.fc3_supercell_matrix is None:
            self._fail("fc3_dataset", "not a phono3py record: no fc3 supercell and dataset")
        from phono3py import Phono3py

        separate = not np.array_equal(self.supercell_matrix, self.fc3_supercell_matrix)
        ph3 = Phono3py(
            phonopy_from_ase(self.unitcell),
            supercell_matrix=self.fc3_supercell_matrix,
            primitive_matrix=self.phonopy_primitive_matrix,
            phonon_supercell_matrix=self.supercell_matrix if separate else None,
            symprec=SYMPREC,
        )
        ph3.dataset = copy.deepcopy(self.fc3_dataset)
        if separate and self.dataset is not None:
            ph3.phonon_dataset = copy.deepcopy(self.dataset)
        if self.nac_params is not None:
            ph3.nac_params = copy.deepcopy(self.nac_params)
        if self.force_constants is not None:
            ph3.fc2 = self.force_constants.copy()
        if produce_fc:
            type2 = "displacements" in self.fc3_dataset
            ph3.produce_fc3(fc_calculator="symfc" if type2 else None)
            if not type2:
                ph3.symmetrize_fc3(use_symfc_projector=True)
            if self.force_constants is None:
                ph3.fc2 = self.full_force_constants()
        return ph3

    # -- helpers ------------------------------------------------------------------------------

    def _phonopy_without_fc(self, symmetry: bool = True) -> phonopy.Phonopy:
        from phonopy import Phonopy

        ph = Phonopy(
            phonopy_from_ase(self.unitcell),
            supercell_matrix=self.supercell_matrix,
            primitive_matrix=self.phonopy_primitive_matrix,
            symprec=SYMPREC,
            is_symmetry=symmetry,
        )
        if self.nac_params is not None:
            ph.nac_params = copy.deepcopy(self.nac_params)
        return ph

    def _int_matrix(self, value: Any, field: str) -> np.ndarray:
        m = np.asarray(value, dtype=float)
        if m.shape != (3, 3) or not np.all(np.isfinite(m)) or not np.allclose(m, np.round(m)):
            self._fail(field, f"must be a (3, 3) integer matrix, got {np.asarray(value).tolist()}")
        m = np.round(m).astype(np.int64)
        if round(np.linalg.det(m)) < 1:
            self._fail(field, f"must have a positive determinant, got {m.tolist()}")
        return m

    def _fail(self, field: str, message: str) -> NoReturn:
        raise RecordError(self.source, self.id, field, message)


FC_SYMMETRIZATIONS = ("symfc", "phonopy", "none")


def produce_force_constants(ph: phonopy.Phonopy, symmetrization: str = "symfc", remove_drift: bool = False) -> None:
    """Produce full force constants on `ph` from its dataset: the one way both sides of an
    evaluation, model and reference, make force constants from forces.

    Args:
        ph: a Phonopy whose dataset has forces; its `force_constants` are set to
            (N_sc, N_sc, 3, 3) eV/Å².
        symmetrization: "symfc" (as `phonopy.load`: finite differences, then the symfc
            projector; symfc fits type-2 datasets), "phonopy" (finite differences, then one
            pass of phonopy's symmetrisation, as the MDR benchmark scripts) or "none".
        remove_drift: subtract each supercell's mean force first (the MDR scripts do, for the
            model's forces).
    """
    if symmetrization not in FC_SYMMETRIZATIONS:
        raise ValueError(f"force-constant symmetrization must be one of {', '.join(FC_SYMMETRIZATIONS)}, got {symmetrization!r}")
    if remove_drift:
        forces = np.asarray(ph.forces, dtype=float)
        ph.forces = forces - forces.mean(axis=1, keepdims=True)
    type2 = "displacements" in (ph.dataset or {})
    ph.produce_force_constants(
        calculate_full_force_constants=True, fc_calculator="symfc" if type2 else None, show_drift=False
    )
    if not type2:
        symmetrize(ph, symmetrization)


def symmetrize(ph: phonopy.Phonopy, symmetrization: str) -> None:
    """Symmetrise `ph.force_constants` in place: "symfc" projector, one "phonopy" pass, or "none"."""
    if symmetrization != "none":
        ph.symmetrize_force_constants(show_drift=False, use_symfc_projector=symmetrization == "symfc")


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def record_id(path: str | os.PathLike) -> str:
    """The material id of a record path: the folder name, or the file name without .yaml[.xz]."""
    path = Path(path)
    name = path.name
    if path.is_dir():
        return name
    for suffix in _COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix in _YAML_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_yaml_name(name: str) -> bool:
    """Whether a file name looks like a (possibly compressed) yaml file."""
    for suffix in ("",) + _COMPRESSED_SUFFIXES:
        for ext in _YAML_SUFFIXES:
            if name.endswith(ext + suffix):
                return True
    return False


def read_record(path: str | os.PathLike, material_id: str | None = None) -> Record:
    """Read one record from a yaml file (plain or compressed) or a phonopy/phono3py folder.

    Args:
        path: MDR / phonopy_params / phono3py_params yaml file, or a folder in phonopy or
            phono3py layout (see the module docstring for what is looked for).
        material_id: id to give the record; default `record_id(path)`.

    Returns:
        The record; force constants full (N_sc, N_sc, 3, 3) eV/Å² when stored in the file.

    Raises:
        RecordError: naming the file, the material and the field of the first problem.
    """
    path = Path(path)
    mid = material_id or record_id(path)
    if path.is_dir():
        return _read_folder(path, mid)
    if not path.is_file():
        raise RecordError(path, mid, "file", "no such file or folder")
    raw = _load_yaml(path, mid)
    if _is_phono3py(raw):
        return _read_phono3py(raw, path, mid, folder=None)
    return _read_phonopy(raw, path, mid, folder=None)


def _read_folder(folder: Path, mid: str) -> Record:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    names = {p.name: p for p in files}

    def params(prefix: str) -> Path | None:
        found = [p for p in files if p.name.startswith(prefix) and is_yaml_name(p.name)]
        if len(found) > 1:
            names_ = [p.name for p in found]
            raise RecordError(folder, mid, "file", f"several {prefix} files: {names_}")
        return found[0] if found else None

    def disp(name: str, forces: str) -> Path | None:
        if name not in names:
            return None
        if forces not in names and not _yaml_has_forces_or_fc(_load_yaml(names[name], mid)):
            message = f"missing: {name} has no forces of its own"
            raise RecordError(folder / forces, mid, forces, message)
        return names[name]

    # first match wins: self-contained params files, then displacement files with forces
    for find, reader in (
        (lambda: params("phono3py_params"), _read_phono3py),
        (lambda: disp("phono3py_disp.yaml", "FORCES_FC3"), _read_phono3py),
        (lambda: params("phonopy_params"), _read_phonopy),
        (lambda: disp("phonopy_disp.yaml", "FORCE_SETS"), _read_phonopy),
    ):
        found = find()
        if found is not None:
            return reader(_load_yaml(found, mid), found, mid, folder=folder)
    others = [p for p in files if is_yaml_name(p.name)]
    if len(others) == 1:
        raw = _load_yaml(others[0], mid)
        reader = _read_phono3py if _is_phono3py(raw) else _read_phonopy
        return reader(raw, others[0], mid, folder=folder)
    if not others:
        raise RecordError(folder, mid, "file", "no phonopy or phono3py yaml file in the folder")
    message = f"cannot tell which yaml is the record: {[p.name for p in others]}"
    raise RecordError(folder, mid, "file", message)


def _load_yaml(path: Path, mid: str) -> dict[str, Any]:
    """Parse a plain or compressed yaml file into a mapping, or raise a RecordError."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RecordError(path, mid, "file", f"cannot read: {err.strerror or err}") from None
    # recognise compression by content so that a misnamed file still reads
    for magic, module in ((b"\xfd7zXZ\x00", lzma), (b"\x1f\x8b", gzip), (b"BZh", bz2)):
        if data.startswith(magic):
            try:
                data = module.decompress(data)
            except (OSError, EOFError, lzma.LZMAError, ValueError) as err:
                message = f"corrupt {module.__name__} data: {err}"
                raise RecordError(path, mid, "file", message) from None
            break
    try:
        raw = yaml.load(data, Loader=_YamlLoader)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecordError(path, mid, "yaml", f"not a valid YAML file{at}: {problem}") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise RecordError(path, mid, "yaml", f"not a YAML text file: {err}") from None
    if not isinstance(raw, dict):
        message = f"not a YAML mapping of phonopy keys (got {type(raw).__name__})"
        raise RecordError(path, mid, "yaml", message)
    return raw


def _is_phono3py(raw: Mapping[str, Any]) -> bool:
    return "phono3py" in raw or "displacement_pairs" in raw


def _yaml_has_forces_or_fc(raw: Mapping[str, Any]) -> bool:
    if "force_constants" in raw:
        return True
    entries = raw.get("displacements") or raw.get("displacement_pairs") or []
    if isinstance(raw.get("dataset"), dict) and "forces" in raw["dataset"]:
        return True
    return bool(entries) and isinstance(entries[0], dict) and "forces" in entries[0]


def _is_nan(value: Any) -> bool:
    try:
        return bool(np.isnan(float(value)))
    except (TypeError, ValueError):
        return False


class _Reader:
    """What every reader shares: where errors point, cells, matrices, units."""

    def __init__(self, path: Path, mid: str):
        self.path = path
        self.mid = mid

    def fail(self, field: str, message: str, path: Path | None = None) -> NoReturn:
        raise RecordError(path or self.path, self.mid, field, message)

    def require(self, raw: Mapping[str, Any], key: str) -> Any:
        if key not in raw:
            self.fail(key, "missing key")
        return raw[key]

    def check_units(self, raw: Mapping[str, Any], command: str) -> None:
        from phonopy.physical_units import get_calculator_physical_units

        header = raw.get(command) if isinstance(raw.get(command), dict) else {}
        calculator = header.get("calculator")
        try:
            units = get_calculator_physical_units(calculator)
        except Exception as err:  # phonopy raises several kinds for an unknown calculator
            self.fail(f"{command}.calculator", f"unknown calculator {calculator!r}: {err}")
        length, fc_unit = units.length_unit, units.force_constants_unit
        if length.lower() not in ("angstrom", "å") or fc_unit != "eV/angstrom^2":
            self.fail(
                f"{command}.calculator",
                f"calculator {calculator!r} works in {length} and {fc_unit}; "
                "only eV and Angstrom records are read (convert with phonopy first)",
            )

    def cell(self, raw: Any, field: str) -> PhonopyAtoms:
        from phonopy.structure.atoms import PhonopyAtoms

        if not isinstance(raw, dict):
            self.fail(field, "must be a mapping with lattice and points")
        lattice = self.array(self.require_in(raw, "lattice", field), f"{field}.lattice", (3, 3))
        _check_lattice(lattice, lambda m: self.fail(f"{field}.lattice", m))
        points = raw.get("points", raw.get("atoms"))
        if not isinstance(points, list) or not points:
            self.fail(f"{field}.points", "missing or empty list of atoms")
        symbols, positions, masses = [], [], []
        for i, point in enumerate(points):
            where = f"{field}.points[{i}]"
            if not isinstance(point, dict):
                self.fail(where, "must be a mapping with symbol, coordinates and mass")
            symbol = self.require_in(point, "symbol", where)
            if symbol not in atomic_numbers or symbol == "X":
                self.fail(f"{where}.symbol", f"unknown chemical symbol {symbol!r}")
            symbols.append(symbol)
            coordinates = self.require_in(point, "coordinates", where)
            positions.append(self.array(coordinates, f"{where}.coordinates", (3,)))
            if "mass" in point:
                mass = self.array(point["mass"], f"{where}.mass", ())
                if not mass > 0:
                    self.fail(f"{where}.mass", f"must be positive, got {float(mass)}")
                masses.append(float(mass))
        if masses and len(masses) != len(symbols):
            self.fail(f"{field}.points", f"{len(masses)} masses for {len(symbols)} atoms")
        return PhonopyAtoms(
            symbols=symbols,
            cell=lattice,
            scaled_positions=np.array(positions),
            masses=masses or None,
        )

    def require_in(self, raw: Mapping[str, Any], key: str, field: str) -> Any:
        if key not in raw:
            self.fail(f"{field}.{key}", "missing key")
        return raw[key]

    def array(self, value: Any, field: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        try:
            arr = np.array(value, dtype=float)
        except (TypeError, ValueError):
            self.fail(field, "not an array of numbers")
        if shape is not None and arr.shape != shape:
            self.fail(field, f"shape {arr.shape}, expected {shape}")
        if not np.all(np.isfinite(arr)):
            self.fail(field, "contains NaN or infinite values")
        return arr

    def matrices(self, raw: Mapping[str, Any]) -> tuple[np.ndarray, Any]:
        smat = self.array(self.require(raw, "supercell_matrix"), "supercell_matrix", (3, 3))
        pmat: Any = "auto"  # as phonopy.load when the yaml has no primitive_matrix
        if raw.get("primitive_matrix") is not None:
            pmat = self.array(raw["primitive_matrix"], "primitive_matrix", (3, 3))
        return smat, pmat

    def phonopy(self, unitcell: PhonopyAtoms, smat: np.ndarray, pmat: Any) -> phonopy.Phonopy:
        from phonopy import Phonopy

        if not np.allclose(smat, np.round(smat)) or round(np.linalg.det(smat)) < 1:
            self.fail(
                "supercell_matrix",
                f"must be an integer matrix with positive determinant, got {smat.tolist()}",
            )
        try:
            # cells only: the symmetry search would cost 10-30x the rest of the build
            smat_int = np.round(smat).astype(int)
            return Phonopy(
                unitcell, smat_int, primitive_matrix=pmat, symprec=SYMPREC, is_symmetry=False
            )
        except Exception as err:  # phonopy reports a bad primitive matrix in several ways
            self.fail("primitive_matrix", f"phonopy cannot build the primitive cell: {err}")

    def compare_cell(self, stored: PhonopyAtoms, built: PhonopyAtoms, field: str) -> None:
        """A cell stored in the file must be the one phonopy builds, atom by atom."""
        if len(stored) != len(built):
            message = f"{len(stored)} atoms, but phonopy builds {len(built)} from the unit cell"
            self.fail(field, message)
        if list(stored.symbols) != list(built.symbols):
            i = next(i for i, (a, b) in enumerate(zip(stored.symbols, built.symbols)) if a != b)
            message = f"{stored.symbols[i]} but the unit cell gives {built.symbols[i]}"
            self.fail(f"{field}.points[{i}].symbol", message)
        if not np.allclose(stored.masses, built.masses, rtol=1e-6, atol=1e-6):
            i = int(np.argmax(np.abs(np.asarray(stored.masses) - np.asarray(built.masses))))
            message = f"{stored.masses[i]} but the unit cell gives {built.masses[i]}"
            self.fail(f"{field}.points[{i}].mass", message)
        diff = np.asarray(stored.scaled_positions) - np.asarray(built.scaled_positions)
        dist = np.linalg.norm((diff - np.round(diff)) @ np.asarray(built.cell), axis=1)
        if dist.max() > 1e-4:
            i = int(np.argmax(dist))
            self.fail(
                f"{field}.points[{i}].coordinates",
                f"{dist[i]:.3g} Å from the atom phonopy builds: the atom order or structure "
                "differs, so force constants would be misassigned",
            )

    def force_constants(self, raw: Any, ph: phonopy.Phonopy) -> np.ndarray:
        from phonopy.harmonic.force_constants import compact_fc_to_full_fc

        if not isinstance(raw, dict):
            self.fail("force_constants", "must be a mapping with shape and elements")
        shape_raw = self.require_in(raw, "shape", "force_constants")
        shape = tuple(int(x) for x in self.array(shape_raw, "force_constants.shape", (2,)))
        elements_raw = self.require_in(raw, "elements", "force_constants")
        elements = self.array(elements_raw, "force_constants.elements")
        n_sc, n_prim = len(ph.supercell), len(ph.primitive)
        if shape not in ((n_sc, n_sc), (n_prim, n_sc)):
            self.fail(
                "force_constants.shape",
                f"{list(shape)} does not match the supercell of {n_sc} atoms "
                f"(full [{n_sc}, {n_sc}] or compact [{n_prim}, {n_sc}])",
            )
        if elements.size != shape[0] * shape[1] * 9:
            message = f"{elements.size} numbers for shape {list(shape)} x 3 x 3"
            self.fail("force_constants.elements", message)
        fc = np.ascontiguousarray(elements.reshape(shape + (3, 3)))
        if shape[0] != shape[1]:
            fc = compact_fc_to_full_fc(ph.primitive, fc)
        return fc

    def load_with_phonopy(self, subset: dict[str, Any], field: str, loader: Any) -> Any:
        """Run phonopy's/phono3py's own yaml loader on a subset of keys, naming `field` on error."""
        try:
            return loader(subset)
        except Exception as err:  # KeyError, ValueError, RuntimeError, AssertionError, ...
            self.fail(field, f"cannot be parsed: {type(err).__name__}: {err}")

    def dataset(
        self, dataset: Any, n_sc: int, field: str, path: Path | None = None
    ) -> dict[str, Any] | None:
        if dataset is None:
            return None
        dataset = dict(dataset)
        if "first_atoms" in dataset:
            dataset["natom"] = n_sc  # old files omit it; forces are checked against it below
        _check_dataset(dataset, n_sc, lambda m: self.fail(field, m, path))
        return dataset

    def reference(self, raw: Mapping[str, Any], n_prim: int) -> dict[str, Any]:
        ref: dict[str, Any] = {}
        for key in MDR_REFERENCE_KEYS:
            if key in raw and raw[key] is not None:
                if key == "energy" and _is_nan(raw[key]):
                    continue  # MDR serves `energy: .nan` for some records: absent, needed only for λE > 0
                ref[key] = self.array(raw[key], key)
        n_t = len(ref["temperatures"]) if "temperatures" in ref else None
        for key in _THERMAL_KEYS:
            if key in ref and (ref[key].ndim != 1 or (n_t is not None and len(ref[key]) != n_t)):
                self.fail(key, f"shape {ref[key].shape} does not match temperatures ({n_t},)")
            if key in ref and n_t is None:
                self.fail("temperatures", f"missing, but {key} is given")
        n_band = 3 * n_prim
        freq = ref.get("phonon_freq")
        if freq is not None and (freq.ndim != 2 or freq.shape[1] != n_band):
            self.fail("phonon_freq", f"shape {freq.shape}, expected (n_q, {n_band})")
        velocities = ref.get("group_velocities")
        if velocities is not None:
            n_q = (freq if freq is not None else velocities).shape[0]
            if velocities.shape != (n_q, n_band, 3):
                message = f"shape {velocities.shape}, expected ({n_q}, {n_band}, 3)"
                self.fail("group_velocities", message)
        for key in ("energy", "volume", "nsites"):
            if key in ref:
                if ref[key].shape != ():
                    self.fail(key, f"must be a number, got shape {ref[key].shape}")
                ref[key] = int(ref[key]) if key == "nsites" else float(ref[key])
        return ref

    def reference_name(self, raw: Mapping[str, Any], command: str) -> str:
        name = raw.get("reference_name")
        if name is not None:
            if not isinstance(name, str) or not name.strip() or "\n" in name:
                self.fail("reference_name", f"must be a one-line non-empty string, got {name!r}")
            return name.strip()
        if "phonon_freq" in raw:
            return "MDR PBE"  # the MDR phonon database (Loew et al. 2025), PBE throughout
        calculator = (raw.get(command) or {}).get("calculator")
        if calculator in _NOT_DFT:
            return str(calculator)
        return f"DFT ({calculator})" if calculator else "DFT"

    def nac(
        self, nac: dict[str, Any] | None, raw: Mapping[str, Any], folder: Path | None, ph: Any
    ) -> dict[str, Any] | None:
        from phonopy.file_IO import parse_BORN
        from phonopy.physical_units import get_calculator_physical_units

        born = None if folder is None or not (folder / "BORN").is_file() else folder / "BORN"
        if born is not None:  # BORN comes first, as in phonopy.load
            try:
                nac = dict(parse_BORN(ph.primitive, symprec=SYMPREC, filename=born))
            except Exception as err:  # BORNFileParseError, ValueError, IndexError
                self.fail("BORN", f"cannot be parsed: {err}", born)
        if nac is None:
            return None
        nac = dict(nac)
        if "factor" not in nac:  # as phonopy.load: the calculator's default
            header = raw.get("phonopy") or raw.get("phono3py") or {}
            nac["factor"] = get_calculator_physical_units(header.get("calculator")).nac_factor
        _check_nac(nac, len(ph.primitive), lambda f, m: self.fail(f, m, born))
        return nac


_DATASET_KEYS = ("displacements", "dataset", "supercell_energies", "natom")
_NAC_KEYS = ("nac", "born_effective_charge", "dielectric_constant")
_FC3_DATASET_KEYS = (
    "displacement_pairs",
    "displacement_pair_info",
    "displacements",
    "dataset",
    "supercell",
    "phonon_supercell_matrix",
    "phonon_supercell",
    "phonon_displacements",
    "phonon_dataset",
)


def _pick(raw: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: raw[k] for k in keys if k in raw}


def _header(raw: Mapping[str, Any], command: str) -> dict[str, Any]:
    # the loaders check physical units against the calculator named in the header
    return {k: raw[k] for k in (command, "physical_unit") if k in raw}


def _read_phonopy(raw: dict[str, Any], path: Path, mid: str, folder: Path | None) -> Record:
    from phonopy.interface.phonopy_yaml import load_phonopy_yaml

    r = _Reader(path, mid)
    r.check_units(raw, "phonopy")
    if "unit_cell" not in raw and "lattice" in raw:  # phonopy also accepts a bare cell
        raw = {**raw, "unit_cell": {k: raw[k] for k in ("lattice", "points", "atoms") if k in raw}}
    unitcell = r.cell(r.require(raw, "unit_cell"), "unit_cell")
    smat, pmat = r.matrices(raw)
    primitive = r.cell(raw["primitive_cell"], "primitive_cell") if "primitive_cell" in raw else None
    if raw.get("primitive_matrix") is None and primitive is not None:
        pmat = _stored_primitive_matrix(r, unitcell, primitive)
    ph = r.phonopy(unitcell, smat, pmat)
    n_sc = len(ph.supercell)
    if "supercell" in raw:
        r.compare_cell(r.cell(raw["supercell"], "supercell"), ph.supercell, "supercell")
    if primitive is not None:
        r.compare_cell(primitive, ph.primitive, "primitive_cell")
    fc = r.force_constants(raw["force_constants"], ph) if "force_constants" in raw else None

    subset = {**_header(raw, "phonopy"), **_pick(raw, _DATASET_KEYS), "natom": n_sc}
    dataset = r.load_with_phonopy(subset, "displacements", load_phonopy_yaml).dataset
    dataset = r.dataset(dataset, n_sc, "dataset" if "dataset" in raw else "displacements")
    if folder is not None and (folder / "FORCE_SETS").is_file() and not _has_forces(dataset):
        dataset = _read_force_sets(r, folder / "FORCE_SETS", n_sc)
    nac_subset = {**_header(raw, "phonopy"), **_pick(raw, _NAC_KEYS)}
    nac = r.load_with_phonopy(nac_subset, "nac", load_phonopy_yaml).nac_params
    nac = r.nac(nac, raw, folder, ph)
    if fc is None and not _has_forces(dataset):
        hint = "" if folder is not None else " (read a phonopy_disp.yaml's folder for FORCE_SETS)"
        r.fail("force_constants", f"neither force constants nor forces in the file{hint}")
    return Record(
        id=mid,
        unitcell=ase_from_phonopy(unitcell),
        supercell_matrix=ph.supercell_matrix,
        primitive_matrix=ph.primitive_matrix,
        force_constants=fc,
        dataset=dataset,
        nac_params=nac,
        reference=r.reference(raw, len(ph.primitive)),
        source=folder or path,
        reference_name=r.reference_name(raw, "phonopy"),
    )


class RecordWarning(UserWarning):
    """A record read with a choice the reader made for it (named in the message)."""


def _stored_primitive_matrix(r: _Reader, unitcell: PhonopyAtoms, primitive: PhonopyAtoms) -> Any:
    """The primitive matrix a file means when it stores a primitive cell but no matrix.

    phonopy 2.x wrote `phonopy_disp.yaml` that way, with the primitive cell it used (often the
    unit cell itself, where no --pa was given). Per-mole properties depend on that cell, so it is
    taken as written; where phonopy's "auto" would now build another one, a warning says so.
    """
    matrix = (np.asarray(primitive.cell) @ np.linalg.inv(np.asarray(unitcell.cell))).T
    with warnings.catch_warnings():  # phonopy's own note that 'auto' was not v3's default
        warnings.simplefilter("ignore")
        auto = r.phonopy(unitcell, np.eye(3), "auto").primitive
    if len(auto) != len(primitive):
        warnings.warn(
            f"{r.path}: no primitive_matrix (a phonopy 2.x file): the primitive cell is the file's own "
            f"primitive_cell ({len(primitive)} atoms); phonopy's 'auto' would build {len(auto)}, and "
            "per-mole properties refer to the file's",
            RecordWarning,
            stacklevel=2,
        )
    return np.round(matrix, 10)


def _read_force_sets(r: _Reader, path: Path, n_sc: int) -> dict[str, Any]:
    from phonopy.file_IO import parse_FORCE_SETS

    try:
        dataset = dict(parse_FORCE_SETS(path, natom=n_sc))
    except Exception as err:  # phonopy raises RuntimeError, ValueError, IndexError on bad files
        r.fail("forces", f"cannot be parsed for a supercell of {n_sc} atoms: {err}", path)
    checked = r.dataset(dataset, n_sc, "forces", path)
    assert checked is not None
    return checked


def _read_phono3py(raw: dict[str, Any], path: Path, mid: str, folder: Path | None) -> Record:
    from phono3py.interface.phono3py_yaml import load_phono3py_yaml

    r = _Reader(path, mid)
    r.check_units(raw, "phono3py")
    unitcell = r.cell(r.require(raw, "unit_cell"), "unit_cell")
    smat3, pmat = r.matrices(raw)
    ph3_cells = r.phonopy(unitcell, smat3, pmat)  # the fc3 supercell and the primitive cell
    n3 = len(ph3_cells.supercell)
    if "supercell" in raw:
        r.compare_cell(r.cell(raw["supercell"], "supercell"), ph3_cells.supercell, "supercell")
    else:
        r.fail("supercell", "missing key")  # phono3py's loader sizes the fc3 dataset by it
    separate = raw.get("phonon_supercell_matrix") is not None
    if separate:
        smat2 = r.array(raw["phonon_supercell_matrix"], "phonon_supercell_matrix", (3, 3))
        ph = r.phonopy(unitcell, smat2, ph3_cells.primitive_matrix)
    else:
        ph = ph3_cells
    n2 = len(ph.supercell)

    subset = {**_header(raw, "phono3py"), **_pick(raw, _FC3_DATASET_KEYS)}
    data = r.load_with_phonopy(subset, "displacement_pairs", load_phono3py_yaml)
    fc3_dataset = data.dataset
    if fc3_dataset is None:
        r.fail("displacement_pairs", "missing key: no fc3 displacement dataset")
    fc3_dataset = dict(fc3_dataset)
    forces_fc3 = None if folder is None else folder / "FORCES_FC3"
    if not _has_forces(fc3_dataset):
        if forces_fc3 is None or not forces_fc3.is_file():
            r.fail("displacement_pairs", "no forces in the file and no FORCES_FC3 beside it")
        fc3_dataset = _read_forces_fc3(r, forces_fc3, fc3_dataset, n3)
    where = forces_fc3 if forces_fc3 is not None and forces_fc3.is_file() else None
    _check_fc3_dataset(fc3_dataset, n3, lambda m: r.fail("displacement_pairs", m, where))

    if separate:
        phonon_dataset = data.phonon_dataset
        forces_fc2 = None if folder is None else folder / "FORCES_FC2"
        has_fc2_file = forces_fc2 is not None and forces_fc2.is_file()
        if phonon_dataset is not None and not _has_forces(phonon_dataset) and has_fc2_file:
            phonon_dataset = _read_forces_fc2(r, forces_fc2, dict(phonon_dataset), n2)
        dataset = r.dataset(phonon_dataset, n2, "phonon_displacements")
        if not _has_forces(dataset):
            r.fail("phonon_displacements", "the phonon supercell has no forces (FORCES_FC2)")
    else:
        dataset = _fc2_dataset_from_fc3(fc3_dataset, n3)

    nac_subset = {**_header(raw, "phono3py"), **_pick(raw, _NAC_KEYS)}
    nac = r.load_with_phonopy(nac_subset, "nac", load_phono3py_yaml).nac_params
    nac = r.nac(nac, raw, folder, ph)
    fc = r.force_constants(raw["force_constants"], ph) if "force_constants" in raw else None
    return Record(
        id=mid,
        unitcell=ase_from_phonopy(unitcell),
        supercell_matrix=ph.supercell_matrix,
        primitive_matrix=ph.primitive_matrix,
        force_constants=fc,
        dataset=dataset,
        nac_params=nac,
        reference=r.reference(raw, len(ph.primitive)),
        source=folder or path,
        fc3_supercell_matrix=ph3_cells.supercell_matrix,
        fc3_dataset=fc3_dataset,
        reference_name=r.reference_name(raw, "phono3py"),
    )


def _read_forces_fc3(r: _Reader, path: Path, dataset: dict[str, Any], n3: int) -> dict[str, Any]:
    from phono3py.file_IO import parse_FORCES_FC3

    if "first_atoms" not in dataset:
        r.fail("forces", "only type-1 FORCES_FC3 (with phono3py_disp.yaml pairs) is read", path)
    dataset = copy.deepcopy(dataset)
    dataset["natom"] = n3
    try:
        parse_FORCES_FC3(dataset, filename=path)
    except Exception as err:  # numpy reshape ValueError, RuntimeError on short files
        first = dataset["first_atoms"]
        n_disp = len(first) + sum(len(d["second_atoms"]) for d in first)
        r.fail("forces", f"expected {n_disp} force sets of {n3} atoms: {err}", path)
    return dataset


def _read_forces_fc2(r: _Reader, path: Path, dataset: dict[str, Any], n2: int) -> dict[str, Any]:
    from phono3py.file_IO import parse_FORCES_FC2

    dataset = copy.deepcopy(dataset)
    dataset["natom"] = n2
    try:
        parse_FORCES_FC2(dataset, filename=path)
    except Exception as err:
        r.fail("forces", f"cannot be parsed for a supercell of {n2} atoms: {err}", path)
    return dataset


def _fc2_dataset_from_fc3(fc3_dataset: dict[str, Any], n_sc: int) -> dict[str, Any]:
    """The phonopy dataset phono3py uses for fc2 when fc2 and fc3 share the supercell."""
    if "first_atoms" in fc3_dataset:
        # fc2 needs only the single displacements, as phono3py's produce_fc2 uses them
        keys = ("number", "displacement", "forces")
        first = [{k: d[k] for k in keys} for d in fc3_dataset["first_atoms"]]
        return {"natom": n_sc, "first_atoms": first}
    return {k: fc3_dataset[k] for k in ("displacements", "forces")}


# --------------------------------------------------------------------------------------------
# checks shared by Record and the readers
# --------------------------------------------------------------------------------------------


def _check_lattice(lattice: np.ndarray, fail: Any) -> None:
    if lattice.shape != (3, 3) or not np.all(np.isfinite(lattice)):
        fail(f"must be a finite (3, 3) matrix, got shape {lattice.shape}")
    if abs(np.linalg.det(lattice)) < 1e-6:
        fail("lattice vectors are degenerate (zero volume): not a periodic crystal")


def _has_forces(dataset: Mapping[str, Any] | None) -> bool:
    if not dataset:
        return False
    if "first_atoms" in dataset:
        return bool(dataset["first_atoms"]) and all("forces" in d for d in dataset["first_atoms"])
    return dataset.get("forces") is not None


def _check_dataset(dataset: Mapping[str, Any], n_sc: int, fail: Any) -> None:
    if "first_atoms" in dataset:
        if dataset.get("natom", n_sc) != n_sc:
            fail(f"natom {dataset['natom']} does not match the supercell of {n_sc} atoms")
        for i, d in enumerate(dataset["first_atoms"]):
            if not 0 <= int(d["number"]) < n_sc:
                atom = int(d["number"]) + 1
                fail(f"displacement {i + 1} moves atom {atom}, not in the {n_sc}-atom supercell")
            if np.shape(d["displacement"]) != (3,):
                fail(f"displacement {i + 1} has shape {np.shape(d['displacement'])}, expected (3,)")
            if "forces" in d:
                forces = np.asarray(d["forces"])
                if forces.shape != (n_sc, 3):
                    shape = forces.shape
                    fail(f"forces of displacement {i + 1} have shape {shape}, expected ({n_sc}, 3)")
                if not np.all(np.isfinite(forces)):
                    fail(f"forces of displacement {i + 1} contain NaN or infinite values")
    elif "displacements" in dataset:
        disps = np.asarray(dataset["displacements"])
        if disps.ndim != 3 or disps.shape[1:] != (n_sc, 3):
            fail(f"displacements have shape {disps.shape}, expected (n, {n_sc}, 3)")
        if dataset.get("forces") is not None:
            forces = np.asarray(dataset["forces"])
            if forces.shape != disps.shape:
                fail(f"forces have shape {forces.shape}, displacements {disps.shape}")
            if not np.all(np.isfinite(forces)):
                fail("forces contain NaN or infinite values")
    else:
        fail("neither first_atoms (type 1) nor displacements (type 2)")


def _check_fc3_dataset(dataset: Mapping[str, Any], n3: int, fail: Any) -> None:
    _check_dataset(dataset, n3, fail)
    for d1 in dataset.get("first_atoms", []):
        for d2 in d1.get("second_atoms", []):
            if not 0 <= int(d2["number"]) < n3:
                atom = int(d2["number"]) + 1
                fail(f"a displacement pair moves atom {atom}, not in the supercell of {n3} atoms")
            # pairs beyond a cutoff are listed without forces on purpose
            if "forces" in d2 and np.shape(d2["forces"]) != (n3, 3):
                fail(f"pair forces have shape {np.shape(d2['forces'])}, expected ({n3}, 3)")


def _check_nac(nac: Mapping[str, Any], n_prim: int, fail: Any) -> None:
    for key in ("born", "dielectric"):
        if key not in nac:
            fail(f"nac.{key}", "missing")
    born, eps = np.asarray(nac["born"], dtype=float), np.asarray(nac["dielectric"], dtype=float)
    if born.shape != (n_prim, 3, 3):
        fail("nac.born", f"shape {born.shape}, expected ({n_prim}, 3, 3) for the primitive cell")
    if eps.shape != (3, 3):
        fail("nac.dielectric", f"shape {eps.shape}, expected (3, 3)")
    if not (np.all(np.isfinite(born)) and np.all(np.isfinite(eps))):
        fail("nac", "contains NaN or infinite values")


# --------------------------------------------------------------------------------------------
# structures
# --------------------------------------------------------------------------------------------


def ase_from_phonopy(cell: PhonopyAtoms) -> Atoms:
    """An ase.Atoms (periodic, with phonopy's masses) from a PhonopyAtoms."""
    return Atoms(
        symbols=list(cell.symbols),
        cell=np.array(cell.cell),
        scaled_positions=np.array(cell.scaled_positions),
        masses=np.array(cell.masses),
        pbc=True,
    )


def phonopy_from_ase(atoms: Atoms) -> PhonopyAtoms:
    """A PhonopyAtoms (symbols, cell, fractional positions, masses) from an ase.Atoms."""
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=np.array(atoms.cell),
        scaled_positions=atoms.get_scaled_positions(wrap=False),
        masses=atoms.get_masses(),
    )


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def write_record(record: Record, path: str | os.PathLike, header: str | None = None) -> Path:
    """Write a record as phonopy yaml (phonopy's own writer) plus its reference values.

    Force constants are written in phonopy's compact form, the dataset with its forces, then
    the reference values and `reference_name` as MDR-style top-level keys. The file is compressed by its suffix
    (.xz, .gz, .bz2) and written atomically: a temporary file in the same folder, then a rename.

    Args:
        record: the record; phono3py fc3 datasets are not written.
        path: destination, e.g. "data/emt/Cu-fcc.yaml.xz".
        header: text written as yaml comment lines at the top (provenance).

    Returns:
        The path written.
    """
    from phonopy.harmonic.force_constants import full_fc_to_compact_fc

    ph = record._phonopy_without_fc()
    if record.dataset is not None:
        ph.dataset = copy.deepcopy(record.dataset)
    if record.force_constants is not None:
        ph.force_constants = full_fc_to_compact_fc(ph.primitive, record.force_constants)
    settings = {"force_constants": record.force_constants is not None}
    text = str(ph.to_phonopy_yaml(settings=settings)).rstrip("\n") + "\n"
    # one flow-style line per key (JSON is valid YAML); floats keep all their digits
    items = [*record.reference.items(), ("reference_name", record.reference_name)]
    lines = [f"{k}: {json.dumps(np.asarray(v).tolist())}\n" for k, v in items]
    text += "\n" + "".join(lines)
    return write_text(path, text, header)


def write_text(path: str | os.PathLike, text: str, header: str | None = None) -> Path:
    """`text` after `header` as "# " comment lines, compressed as the file name says (.xz/.lzma,
    .gz, .bz2, else plain), written atomically. Returns the path."""
    path = Path(path)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    data = text.encode()
    compress = {".xz": lzma.compress, ".lzma": lzma.compress, ".gz": _gzip, ".bz2": bz2.compress}
    atomic_write(path, compress[path.suffix](data) if path.suffix in compress else data)
    return path


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # no timestamp, so the same record gives the same bytes
