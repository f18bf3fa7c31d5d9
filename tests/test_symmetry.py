"""Supercell symmetry, Hessian column classes and force-constant rebuilding on real DFT data.

References: the MDR Si record (mp-149) and the phonopy example data sets NaCl, MgB2 and Al2O3
(VASP force constants produced by phonopy); phonopy's own space-group symmetriser and
displacement generator are the independent cross-checks.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from types import SimpleNamespace

import ase
import numpy as np
import phonopy
import pytest
from conftest import shared_file
from phonopy.harmonic.force_constants import (
    compact_fc_to_full_fc,
    symmetrize_force_constants_by_space_group,
)

from phonon_eval.symmetry import SupercellSymmetry, SymmetryError, symmetrize_translational

# shared/ path of the phonopy yaml and of the FORCE_SETS (None: force constants in the yaml).
RECORDS = {
    "Si-mp-149": ("data/mdr/mp-149.yaml", None),
    "NaCl": ("data/dft/phonopy-NaCl/phonopy_disp.yaml", "data/dft/phonopy-NaCl/FORCE_SETS"),
    "MgB2": ("data/dft/phonopy-MgB2/phonopy_disp.yaml", "data/dft/phonopy-MgB2/FORCE_SETS"),
    "Al2O3": ("data/dft/phonopy-Al2O3/phonopy_disp.yaml", "data/dft/phonopy-Al2O3/FORCE_SETS"),
}

# Counts derived by hand (see test_counts_per_record):
# (space group, N, column classes, independent columns,
#  phonopy displacements along lattice axes, distinct directions (up to sign) in the data set).
EXPECTED = {
    "Si-mp-149": (227, 64, 1, 1, 1, 1),
    "NaCl": (225, 64, 2, 2, 2, 2),
    "MgB2": (191, 54, 6, 4, 4, 2),
    "Al2O3": (167, 120, 9, 5, 4, 3),
}


@dataclass(frozen=True)
class Case:
    name: str
    phonon: phonopy.Phonopy
    symmetry: SupercellSymmetry
    fc: np.ndarray  # (N, N, 3, 3) DFT force constants as phonopy produced them
    fc_sym: np.ndarray  # the same averaged over the space group


@functools.cache
def _load(name: str) -> Case:
    yaml, force_sets = RECORDS[name]
    if force_sets is None:
        ph = phonopy.load(shared_file(yaml))
    else:
        ph = phonopy.load(shared_file(yaml), force_sets_filename=shared_file(force_sets))
    if ph.force_constants is None:
        ph.produce_force_constants()
    fc = ph.force_constants
    if fc.shape[0] != fc.shape[1]:
        fc = compact_fc_to_full_fc(ph.primitive, fc)
    cell = ph.supercell
    atoms = ase.Atoms(symbols=cell.symbols, positions=cell.positions, cell=cell.cell, pbc=True)
    symmetry = SupercellSymmetry.from_atoms(atoms)
    return Case(name, ph, symmetry, fc, symmetry.symmetrize(fc))


@pytest.fixture(params=list(RECORDS))
def case(request) -> Case:
    return _load(request.param)


def _columns(fc: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    return np.stack([fc[:, b, :, j] for b, j in pairs])


def _silicon() -> ase.Atoms:
    """Diamond Si primitive cell."""
    cell = 2.715 * (1 - np.eye(3))
    return ase.Atoms("Si2", scaled_positions=[[0, 0, 0], [0.25] * 3], cell=cell, pbc=True)


def _spans(rotations: np.ndarray, vectors: np.ndarray) -> bool:
    images = np.einsum("gij,vj->gvi", rotations, np.atleast_2d(vectors)).reshape(-1, 3)
    return np.linalg.matrix_rank(images, tol=1e-8) == 3


def test_si_one_column_rebuilds_everything():
    case = _load("Si-mp-149")
    sym = case.symmetry
    classes = sym.column_orbits()
    assert classes.pairs() == [(0, 0)] and classes.multiplicity.tolist() == [192]
    independent = sym.independent_columns()
    assert independent.pairs() == [(0, 0)] and independent.multiplicity.tolist() == [192.0]
    # Td site symmetry: 24 operations fix each of the 64 atoms of the one orbit.
    assert sym.n_operations == 1536 and all(len(sym.site_symmetry(a)) == 24 for a in range(64))

    scale = np.abs(case.fc).max()
    # Raw DFT force constants are symmetric up to rounding (phonopy symmetrised them already).
    assert np.abs(case.fc - case.fc_sym).max() < 1e-10 * scale
    column = case.fc_sym[:, 0, :, 0]
    np.testing.assert_allclose(
        sym.rebuild({(0, 0): column}), case.fc_sym, rtol=0, atol=1e-10 * scale
    )
    np.testing.assert_allclose(
        sym.rebuild({(0, 0): case.fc[:, 0, :, 0]}), case.fc, rtol=0, atol=1e-10 * scale
    )


def test_operations_match_phonopy(case):
    """Same (Cartesian rotation, atom permutation) pairs and orbits as phonopy's symmetry."""
    sym, reference = case.symmetry, case.phonon.symmetry
    lattice = case.phonon.supercell.cell
    rotations = lattice.T @ reference.symmetry_operations["rotations"] @ np.linalg.inv(lattice.T)

    def keys(rot, perm):
        return sorted(np.round(r, 8).tobytes() + p.tobytes() for r, p in zip(rot, perm))

    assert keys(sym.rotations, sym.permutations) == keys(
        rotations, np.asarray(reference.atomic_permutations, dtype=sym.permutations.dtype)
    )
    np.testing.assert_array_equal(sym.orbits, reference.get_map_atoms())
    # Raw DFT force constants are symmetric up to rounding (phonopy symmetrised them already).
    assert np.abs(case.fc - case.fc_sym).max() < 1e-10 * np.abs(case.fc).max()


def _large_supercells() -> dict[str, ase.Atoms]:
    from ase.build import bulk

    skewed = bulk("Ti") * (4, 4, 3)  # hexagonal: fractional and Cartesian nearest can differ
    distorted = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    distorted.positions[0] += [0.05, 0.02, 0.0]  # one rotation left, 1 pure translation
    return {
        "NaCl-216": bulk("NaCl", "rocksalt", a=5.64, cubic=True) * (3, 3, 3),
        "Si-250": bulk("Si") * (5, 5, 5),
        "Ti-96": skewed,
        "Cu-32-distorted": distorted,
    }


@pytest.mark.parametrize("name", ["NaCl-216", "Si-250", "Ti-96", "Cu-32-distorted"])
def test_permutations_of_large_supercells_match_phonopy(name):
    """Composed from translations and one operation per rotation, the permutations of every
    operation are still phonopy's (which matches each operation atom by atom)."""
    from phonopy.structure.atoms import PhonopyAtoms
    from phonopy.structure.symmetry import Symmetry

    atoms = _large_supercells()[name]
    sym = SupercellSymmetry.from_atoms(atoms)
    cell = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array, positions=atoms.positions)
    reference = Symmetry(cell, symprec=1e-5)
    lattice = atoms.cell.array
    rotations = lattice.T @ reference.symmetry_operations["rotations"] @ np.linalg.inv(lattice.T)
    assert len(sym.permutations) == len(rotations) > 1

    def keys(rot, perm):
        return sorted(np.round(r, 8).tobytes() + p.tobytes() for r, p in zip(rot, perm))

    assert keys(sym.rotations, sym.permutations) == keys(
        rotations, np.asarray(reference.atomic_permutations, dtype=sym.permutations.dtype)
    )


@pytest.mark.parametrize("name", ["MgB2", "Al2O3"])  # the two with non-Cartesian rotations
def test_symmetrize_matches_phonopy(name):
    case = _load(name)
    reference = case.fc.copy()
    symmetrize_force_constants_by_space_group(
        reference, case.phonon.supercell.cell, case.phonon.symmetry
    )
    np.testing.assert_allclose(case.fc_sym, reference, rtol=0, atol=1e-12 * np.abs(case.fc).max())


def test_rebuild_from_independent_columns_is_exact(case):
    sym = case.symmetry
    pairs = sym.independent_columns().pairs()
    scale = np.abs(case.fc_sym).max()
    from_array = sym.rebuild(_columns(case.fc_sym, pairs))
    np.testing.assert_allclose(from_array, case.fc_sym, rtol=0, atol=1e-10 * scale)
    from_dict = sym.rebuild({p: case.fc_sym[:, p[0], :, p[1]] for p in pairs})
    np.testing.assert_array_equal(from_dict, from_array)
    np.testing.assert_allclose(
        sym.rebuild(_columns(case.fc, pairs)), case.fc, rtol=0, atol=1e-10 * scale
    )


def test_rebuild_of_noisy_columns_is_symmetric(case):
    """Columns that break the symmetry (a potential's HVPs) still give invariant force constants."""
    sym = case.symmetry
    pairs = sym.independent_columns().pairs()
    noise = np.random.default_rng(0).normal(0.0, 0.05, (len(pairs), sym.n_atoms, 3))
    noisy = _columns(case.fc, pairs) + noise
    fc = sym.rebuild(noisy)
    np.testing.assert_allclose(sym.symmetrize(fc), fc, rtol=0, atol=1e-10 * np.abs(fc).max())


def test_column_classes(case):
    sym = case.symmetry
    classes = sym.column_orbits()
    n = sym.n_atoms
    assert classes.multiplicity.sum() == 3 * n
    assert classes.labels.shape == (n, 3)
    np.testing.assert_array_equal(np.bincount(classes.labels.ravel()), classes.multiplicity)
    # Each representative stands for itself.
    np.testing.assert_array_equal(
        classes.labels[classes.atoms, classes.directions], np.arange(len(classes))
    )
    # Members of a class hold the same entries up to order and sign: same MAE for any error.
    scale = np.abs(case.fc_sym).max()
    for index, (a, j) in enumerate(classes.pairs()):
        reference = np.sort(np.abs(case.fc_sym[:, a, :, j]).ravel())
        members = classes.members(index)
        entries = case.fc_sym[:, members[:, 0], :, members[:, 1]]  # (m, N, 3)
        profiles = np.sort(np.abs(entries).reshape(len(members), -1), axis=1)
        np.testing.assert_allclose(
            profiles, np.broadcast_to(reference, profiles.shape), rtol=0, atol=1e-12 * scale
        )
    # Orbit-stabiliser: |orbit| * |site symmetry| = |group| at every representative.
    for a in sym.representatives:
        assert np.sum(sym.orbits == a) * len(sym.site_symmetry(a)) == sym.n_operations


def test_independent_columns_are_minimal(case):
    sym = case.symmetry
    independent = sym.independent_columns()
    assert independent.multiplicity.sum() == pytest.approx(3 * sym.n_atoms)
    for a in sym.representatives:
        rotations = sym.rotations[sym.site_symmetry(a)]
        chosen = independent.directions[independent.atoms == a]
        assert _spans(rotations, np.eye(3)[chosen])
        # No smaller set of Cartesian axes spans R^3 under the site symmetry.
        if len(chosen) > 1:
            for subset in itertools.combinations(range(3), len(chosen) - 1):
                assert not _spans(rotations, np.eye(3)[list(subset)])


def test_counts_per_record(case):
    """Counts derived by hand, cross-checked against phonopy's displacement generator.

    Si (Fd-3m): one orbit of 64 atoms with site symmetry -43m, whose S4 and 3-fold axes send x
    onto ±x, ±y, ±z: one class of 192, one column.
    NaCl (Fm-3m): Na and Cl orbits of 32, site m-3m: one class and one column each.
    MgB2 (P6/mmm, a along x): Mg (18, 6/mmm) and B (36, -6m2); the 3- and 6-fold axes spread x
    over the plane, z stays apart: 2 columns each. The only signed-permutation rotations are
    diag(±1, ±1, ±1) (no 90° rotations), so x, y, z never share a class: 2 orbits x 3 = 6.
    Al2O3 (R-3c, 2x2x1 hexagonal, 48 Al + 72 O): Al (site 3) needs x and z; the first O (site .2,
    2-fold axis along x) maps each Cartesian axis onto ± itself, so it needs x, y, z: 5 columns.
    The signed-permutation rotations are {1, -1, 2_x, m_x}: Al stays one orbit under them (3
    classes), O splits into the 24 atoms whose 2-fold axis is x and the other 48 (6 classes): 9.

    Phonopy (is_diagonal=False) searches along lattice vectors, not Cartesian axes. At the O of
    Al2O3 the lattice vector b (120° from a) is no eigenvector of 2_x, so b and c suffice there:
    phonopy needs 4 displacements where our Cartesian columns need 5. The data sets were made with
    diagonal directions, which need fewer still (one per site in MgB2).
    """
    sym, ph = case.symmetry, case.phonon
    summary = sym.summary()
    print(f"{case.name}: {summary}")
    number, n_atoms, n_classes, n_independent, n_axis, n_dataset = EXPECTED[case.name]
    assert summary["space_group_number"] == number
    assert summary["n_atoms"] == n_atoms and summary["n_columns"] == 3 * n_atoms
    assert summary["n_column_classes"] == n_classes
    assert summary["n_independent_columns"] == n_independent
    assert number == ph.symmetry.dataset.number

    fresh = phonopy.Phonopy(
        ph.unitcell, supercell_matrix=ph.supercell_matrix, primitive_matrix=ph.primitive_matrix
    )
    fresh.generate_displacements(distance=0.01, is_plusminus=False, is_diagonal=False)
    axis = fresh.dataset["first_atoms"]
    assert len(axis) == n_axis

    first_atoms = ph.dataset["first_atoms"]
    unit = [np.abs(d["displacement"]) / np.linalg.norm(d["displacement"]) for d in first_atoms]
    directions = {(d["number"], tuple(np.round(u, 6))) for d, u in zip(first_atoms, unit)}
    assert len(directions) == n_dataset
    # On these four records phonopy's freer directions never need more than our Cartesian axes
    # (an observation, not a theorem: both searches are greedy).
    assert n_independent >= n_axis >= n_dataset
    # Phonopy displaces one atom per orbit, the same representatives as ours, and its directions
    # at each one span R^3 under our site symmetry.
    for dataset in (axis, first_atoms):
        assert sorted({d["number"] for d in dataset}) == sym.representatives.tolist()
        for a in sym.representatives:
            vectors = np.array([d["displacement"] for d in dataset if d["number"] == a])
            assert _spans(sym.rotations[sym.site_symmetry(a)], vectors)


def test_p1_every_column_is_independent():
    rng = np.random.default_rng(7)
    atoms = ase.Atoms(
        "SiGeC2O",
        scaled_positions=rng.random((5, 3)),
        cell=np.diag([4.1, 4.7, 5.3]) + rng.normal(0, 0.2, (3, 3)),
        pbc=True,
    )
    sym = SupercellSymmetry.from_atoms(atoms)
    assert sym.number == 1 and sym.n_operations == 1
    classes, independent = sym.column_orbits(), sym.independent_columns()
    assert len(classes) == len(independent) == 15
    assert classes.multiplicity.tolist() == [1] * 15
    assert independent.multiplicity.tolist() == [1.0] * 15
    columns = rng.normal(size=(15, 5, 3))
    fc = sym.rebuild(columns)
    np.testing.assert_allclose(_columns(fc, independent.pairs()), columns, rtol=0, atol=1e-12)


def test_fallback_to_p1_when_spglib_fails():
    # Two atoms on one site: spglib refuses ("too close distance between atoms").
    positions = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
    atoms = ase.Atoms("NaCl2", scaled_positions=positions, cell=4.0 * np.eye(3), pbc=True)
    with pytest.warns(UserWarning, match="Cl2Na.*P1"):
        sym = SupercellSymmetry.from_atoms(atoms)
    assert sym.international == "P1" and sym.n_operations == 1
    np.testing.assert_array_equal(sym.permutations, [[0, 1, 2]])
    assert len(sym.independent_columns()) == 9


def test_fallback_when_spglib_returns_none_or_raises(monkeypatch):
    import phonon_eval.symmetry as module

    atoms = _silicon()
    assert SupercellSymmetry.from_atoms(atoms).number == 227

    monkeypatch.setattr(module.spglib, "get_symmetry_dataset", lambda *args, **kwargs: None)
    with pytest.warns(UserWarning, match="no symmetry dataset for Si2"):
        assert SupercellSymmetry.from_atoms(atoms).number == 1

    def fail(*args, **kwargs):
        raise module.spglib.error.SpglibError("too close distance between atoms")

    monkeypatch.setattr(module.spglib, "get_symmetry_dataset", fail)
    with pytest.warns(UserWarning, match="too close distance.*Si2"):
        assert SupercellSymmetry.from_atoms(atoms).international == "P1"


def test_operation_without_image_is_an_error(monkeypatch):
    import phonon_eval.symmetry as module

    atoms = _silicon()
    bogus = SimpleNamespace(
        rotations=np.array([np.eye(3, dtype=int)] * 2),
        translations=np.array([[0, 0, 0], [0.1, 0, 0]]),
        number=2,
        international="P-1",
    )
    monkeypatch.setattr(module.spglib, "get_symmetry_dataset", lambda *args, **kwargs: bogus)
    with pytest.raises(SymmetryError, match="operation 1 maps atom 0"):
        SupercellSymmetry.from_atoms(atoms)


def test_rebuild_needs_columns_that_determine_each_orbit():
    case = _load("MgB2")
    sym = case.symmetry
    fc = case.fc_sym
    mg_x, mg_z, b_x, b_z = fc[:, 0, :, 0], fc[:, 0, :, 2], fc[:, 18, :, 0], fc[:, 18, :, 2]
    with pytest.raises(ValueError, match="orbit of atom 0 do not determine"):
        sym.rebuild({(0, 0): mg_x, (18, 0): b_x, (18, 2): b_z})
    with pytest.raises(ValueError, match="no column given for the orbit of atom 18"):
        sym.rebuild({(0, 0): mg_x, (0, 2): mg_z})
    with pytest.raises(ValueError, match="shape"):
        sym.rebuild(np.zeros((3, 54, 3)))
    # Columns of any atoms of the orbits will do, not only of the representatives.
    assert sym.orbits[1] == sym.orbits[5] == 0 and sym.orbits[40] == 18
    columns = {(1, 0): fc[:, 1, :, 0], (5, 2): fc[:, 5, :, 2], (40, 1): fc[:, 40, :, 1]}
    columns[(18, 2)] = b_z
    np.testing.assert_allclose(sym.rebuild(columns), fc, rtol=0, atol=1e-10 * np.abs(fc).max())


def test_symmetrize_translational_imposes_the_sum_rule():
    case = _load("NaCl")
    drift = case.fc + 0.01  # every block shifted: the sums over atoms are far from zero
    before = drift.copy()
    fc = symmetrize_translational(drift)
    np.testing.assert_array_equal(drift, before)  # a new array; the input is untouched
    assert np.abs(drift.sum(axis=1)).max() > 0.5
    assert np.abs(fc.sum(axis=0)).max() < 1e-10 and np.abs(fc.sum(axis=1)).max() < 1e-10
    assert np.abs(fc - case.fc).max() < 0.02
