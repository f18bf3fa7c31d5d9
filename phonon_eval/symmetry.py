"""Supercell space-group symmetry: atom orbits, site symmetries, independent Hessian columns.

The only module of the project that talks to spglib. Symmetry is found on the supercell itself, so
pure lattice translations of the primitive cell appear as operations and every operation acts on
the supercell's atoms as a permutation.

Force constants use phonopy's layout fc[a, b, i, j] = d²E / dr[a, i] dr[b, j], shape (N, N, 3, 3),
in eV/Å². A "column" (b, j) is fc[:, b, :, j], shape (N, 3): the Hessian-vector product with a
unit displacement of atom b along Cartesian axis j. An operation g = (R, t) with atom permutation p
(atom a goes to p[a]) leaves the force constants invariant when

    fc[p[a], p[b]] = R fc[a, b] R^T    for all a, b.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import ase
import numpy as np
import spglib
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

__all__ = ["ColumnSet", "SupercellSymmetry", "SymmetryError", "symmetrize_translational"]

# Rotation entries closer than this to 0 or ±1 count as exact: Cartesian rotations come from
# integer lattice rotations through a float similarity transform, so their errors are ~1e-15.
_EXACT = 1e-8


class SymmetryError(ValueError):
    """Operations from spglib that do not map the structure onto itself within the tolerance."""


@dataclass(frozen=True, eq=False)
class ColumnSet:
    """Hessian columns (atom, direction), each standing for `multiplicity` of the 3N columns.

    Attributes:
        atoms: (n,) int atom index b of each column.
        directions: (n,) int Cartesian direction j (0, 1, 2 for x, y, z) of each column.
        multiplicity: (n,) how many of the 3N columns each one stands for; sums to 3N. Integer
            for column classes, float for independent columns (3 * orbit size / columns chosen).
        labels: (N, 3) int index into this set of the column standing for column (b, j), or None
            when the set is not a partition of the columns (independent columns).
    """

    atoms: np.ndarray
    directions: np.ndarray
    multiplicity: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.atoms)

    def pairs(self) -> list[tuple[int, int]]:
        """The columns as (atom, direction) tuples, in order."""
        return list(zip(self.atoms.tolist(), self.directions.tolist(), strict=True))

    def members(self, index: int) -> np.ndarray:
        """All columns of class `index` as an (m, 2) int array of (atom, direction) rows.

        Args:
            index: position of the class in this set.

        Returns:
            (multiplicity[index], 2) int array; the representative is among the rows.
        """
        if self.labels is None:
            raise ValueError("members() needs a partition of the columns (column_orbits())")
        return np.argwhere(self.labels == index)


@dataclass(frozen=True, eq=False)
class SupercellSymmetry:
    """Space-group operations of a supercell acting on its atoms and on force constants.

    Attributes:
        rotations: (n_ops, 3, 3) Cartesian rotations R; operation g maps r to R[g] r + t[g].
        translations: (n_ops, 3) Cartesian translations t, Å.
        permutations: (n_ops, N) int; permutations[g, a] is the atom that atom a is mapped onto.
        orbits: (N,) int; the smallest atom index of each atom's orbit (its representative).
        number: space-group number of the supercell's dataset (1 for the P1 fallback).
        international: international (Hermann-Mauguin) symbol of that space group.
        symprec: distance tolerance used for spglib and for matching atom images, Å.
    """

    rotations: np.ndarray
    translations: np.ndarray
    permutations: np.ndarray
    orbits: np.ndarray
    number: int
    international: str
    symprec: float

    def __post_init__(self) -> None:
        # Frozen means frozen: the arrays are shared by every caller of this object.
        for array in (self.rotations, self.translations, self.permutations, self.orbits):
            array.flags.writeable = False

    @classmethod
    def from_atoms(cls, atoms: ase.Atoms, symprec: float = 1e-5) -> SupercellSymmetry:
        """Find the symmetry of a supercell with spglib, falling back to P1 with a warning.

        Args:
            atoms: the supercell, N atoms, treated as periodic along all three cell vectors.
            symprec: distance tolerance, Å.

        Returns:
            The operations of the supercell's space group, with their atom permutations.

        Raises:
            SymmetryError: if an operation spglib returned maps some atom onto no atom.
        """
        n = len(atoms)
        lattice = np.asarray(atoms.cell.array, dtype=float)
        if n == 0 or abs(np.linalg.det(lattice)) < 1e-12:
            return cls._p1(atoms, symprec, "the cell is not three-dimensional")
        fractional = np.linalg.solve(lattice.T, np.asarray(atoms.positions, dtype=float).T).T
        numbers = np.asarray(atoms.numbers)
        try:
            with warnings.catch_warnings():
                # spglib 2.7+ warns on every call until its new error handling is the default.
                warnings.filterwarnings("ignore", "Set OLD_ERROR_HANDLING", DeprecationWarning)
                dataset = spglib.get_symmetry_dataset(
                    (lattice, fractional, numbers), symprec=symprec
                )
        except spglib.error.SpglibError as exc:
            return cls._p1(atoms, symprec, f"spglib failed: {exc}")
        if dataset is None:
            return cls._p1(atoms, symprec, "spglib found no symmetry dataset")

        frac_rotations = np.asarray(dataset.rotations, dtype=float)
        frac_translations = np.asarray(dataset.translations, dtype=float)
        # r = L^T x with the lattice vectors as rows of L, so R_cart = L^T R L^-T.
        rotations = lattice.T @ frac_rotations @ np.linalg.inv(lattice.T)
        translations = frac_translations @ lattice
        permutations = _atom_permutations(
            fractional, numbers, lattice, frac_rotations, frac_translations, symprec, atoms
        )
        return cls(
            rotations=rotations,
            translations=translations,
            permutations=permutations,
            orbits=permutations.min(axis=0),
            number=int(dataset.number),
            international=str(dataset.international),
            symprec=float(symprec),
        )

    @classmethod
    def _p1(cls, atoms: ase.Atoms, symprec: float, reason: str) -> SupercellSymmetry:
        warnings.warn(
            f"{reason} for {atoms.get_chemical_formula()} ({len(atoms)} atoms); "
            "using P1 (identity only): every Hessian column is treated as independent",
            stacklevel=3,
        )
        n = len(atoms)
        return cls(
            rotations=np.eye(3)[None],
            translations=np.zeros((1, 3)),
            permutations=np.arange(n)[None],
            orbits=np.arange(n),
            number=1,
            international="P1",
            symprec=float(symprec),
        )

    @property
    def n_atoms(self) -> int:
        return self.permutations.shape[1]

    @property
    def n_operations(self) -> int:
        return self.permutations.shape[0]

    @property
    def representatives(self) -> np.ndarray:
        """(n_orbits,) int: the smallest atom index of each orbit, ascending."""
        return np.unique(self.orbits)

    def site_symmetry(self, atom: int) -> np.ndarray:
        """Indices of the operations that leave `atom` where it is (its site-symmetry group).

        Args:
            atom: atom index in the supercell.

        Returns:
            (n_site,) int indices into rotations / translations / permutations.
        """
        return np.flatnonzero(self.permutations[:, atom] == atom)

    def column_orbits(self) -> ColumnSet:
        """Partition the 3N columns into classes related by signed-permutation rotations.

        An operation whose Cartesian rotation only permutes and flips axes maps column (b, j) onto
        column (p[b], k) with R e_j = ±e_k, and the entries of one onto ± a permutation of the
        entries of the other: fc[p[a], p[b], :, k] = ±R fc[a, b, :, j]. So any error that depends
        only on absolute values (MAE, RMSE) is the same for every member of a class, and sampling
        representatives with probability multiplicity / 3N has the same expected loss as uniform
        sampling. Such operations form a subgroup, so each class is one orbit of that subgroup.

        Returns:
            The classes: representative = smallest column index 3 b + j of the class,
            multiplicity = class size (int), labels = class of every column.
        """
        rot = self.rotations
        signed_perm = np.all(
            (np.abs(rot) < _EXACT) | (np.abs(np.abs(rot) - 1.0) < _EXACT), axis=(1, 2)
        ) & np.all(np.sum(np.abs(rot) > 0.5, axis=1) == 1, axis=1)
        ops = np.flatnonzero(signed_perm)
        # target[g, j] = k with R[g] e_j = ±e_k.
        target = np.argmax(np.abs(rot[ops]), axis=1)
        images = 3 * self.permutations[ops][:, :, None] + target[:, None, :]  # (G, N, 3)
        root = images.reshape(len(ops), -1).min(axis=0)
        reps, labels, counts = np.unique(root, return_inverse=True, return_counts=True)
        return ColumnSet(
            atoms=reps // 3,
            directions=reps % 3,
            multiplicity=counts,
            labels=labels.reshape(self.n_atoms, 3),
        )

    def independent_columns(self) -> ColumnSet:
        """A minimal set of columns from which the full group rebuilds all force constants.

        At each orbit representative a, directions are taken greedily in the order x, y, z until
        their images under the site-symmetry rotations of a span R^3.

        Returns:
            The columns, ordered by representative then direction; multiplicity is
            3 * orbit size / number of directions chosen at that representative (float).
        """
        sizes = np.bincount(self.orbits, minlength=self.n_atoms)
        atoms, directions, multiplicity = [], [], []
        for a in self.representatives:
            site_rot = self.rotations[self.site_symmetry(a)]
            chosen: list[int] = []
            rank = 0
            for j in range(3):
                images = site_rot[:, :, chosen + [j]].transpose(0, 2, 1).reshape(-1, 3)
                new_rank = np.linalg.matrix_rank(images, tol=_EXACT)
                if new_rank > rank:
                    chosen.append(j)
                    rank = new_rank
                if rank == 3:
                    break
            atoms += [a] * len(chosen)
            directions += chosen
            multiplicity += [3.0 * sizes[a] / len(chosen)] * len(chosen)
        return ColumnSet(
            atoms=np.asarray(atoms, dtype=int),
            directions=np.asarray(directions, dtype=int),
            multiplicity=np.asarray(multiplicity, dtype=float),
        )

    def rebuild(self, columns: Mapping[tuple[int, int], ArrayLike] | ArrayLike) -> np.ndarray:
        """Full force constants from a few columns and the space group.

        Every known column (b, j) is carried to the representative a of its orbit by each
        operation g with p[b] = a, which gives fc[p[c], a] R e_j = R fc[c, b, :, j] for every
        atom c. These equations are solved for the 3x3 blocks fc[:, a] by least squares; each
        other atom b' of the orbit is then filled from one operation mapping a to b':
        fc[p[c], b'] = R fc[c, a] R^T. The result is exact for symmetric input, and invariant
        under the group even for noisy input (a potential's HVPs), because the site symmetry maps
        the set of equations onto itself and the least-squares solution is unique.

        Args:
            columns: {(atom, direction): (N, 3) column fc[:, atom, :, direction]} in eV/Å², or
                an (n_independent, N, 3) array in the order of independent_columns(). The columns
                of any one orbit must determine it (independent_columns() always do).

        Returns:
            (N, N, 3, 3) force constants, eV/Å².

        Raises:
            ValueError: if the columns have the wrong shape or leave some orbit undetermined.
        """
        n = self.n_atoms
        if not isinstance(columns, Mapping):
            array = np.asarray(columns, dtype=float)
            independent = self.independent_columns()
            if array.shape != (len(independent), n, 3):
                raise ValueError(
                    f"columns array must have shape {(len(independent), n, 3)} "
                    f"(independent_columns() order), got {array.shape}"
                )
            columns = dict(zip(independent.pairs(), array, strict=True))

        inverse = np.argsort(self.permutations, axis=1)
        # Per representative: directions R e_j (3, m) and the matching rotated columns (N, 3, m).
        directions: dict[int, list[np.ndarray]] = {}
        values: dict[int, list[np.ndarray]] = {}
        for (b, j), column in columns.items():
            column = np.asarray(column, dtype=float)
            if not (0 <= b < n and 0 <= j < 3):
                raise ValueError(f"column ({b}, {j}) is not an (atom < {n}, direction < 3) pair")
            if column.shape != (n, 3):
                raise ValueError(f"column ({b}, {j}) must have shape {(n, 3)}, got {column.shape}")
            a = int(self.orbits[b])
            ops = np.flatnonzero(self.permutations[:, b] == a)
            rot = self.rotations[ops]
            directions.setdefault(a, []).append(rot[:, :, j].T)
            # fc[d, a] R e_j = R column[p^-1[d]] for every atom d.
            values.setdefault(a, []).append(
                np.einsum("gik,gdk->dig", rot, column[inverse[ops]])
            )

        fc = np.zeros((n, n, 3, 3))
        for a in self.representatives:
            if a not in directions:
                raise ValueError(f"no column given for the orbit of atom {a}")
            v = np.concatenate(directions[a], axis=1)
            if np.linalg.matrix_rank(v, tol=_EXACT) < 3:
                raise ValueError(
                    f"the columns given for the orbit of atom {a} do not determine it: their "
                    "images under its site symmetry do not span three directions"
                )
            w = np.concatenate(values[a], axis=2)
            block = w @ np.linalg.pinv(v)  # (N, 3, 3) = fc[:, a]
            # The orbit of a, and for each of its atoms the first operation mapping a onto it.
            targets, ops = np.unique(self.permutations[:, a], return_index=True)
            rot = self.rotations[ops]
            rotated = np.einsum("bij,cjk,blk->bcil", rot, block, rot)
            fc[self.permutations[ops], targets[:, None]] = rotated
        return fc

    def symmetrize(self, force_constants: ArrayLike) -> np.ndarray:
        """Average force constants over the space group (projection onto the symmetric ones).

        Args:
            force_constants: (N, N, 3, 3) full force constants, eV/Å².

        Returns:
            (N, N, 3, 3) mean over operations of fc'[p[a], p[b]] = R fc[a, b] R^T, eV/Å².
        """
        fc = np.asarray(force_constants, dtype=float)
        if fc.shape != (self.n_atoms, self.n_atoms, 3, 3):
            raise ValueError(f"force constants must be full {(self.n_atoms,) * 2 + (3, 3)}")
        # Operations differing by a lattice translation share R: rotate once per distinct R,
        # then only gather, fc'[a, b] = R fc[p^-1[a], p^-1[b]] R^T.
        keys = np.round(self.rotations, 6).reshape(self.n_operations, 9)
        _, group = np.unique(keys, axis=0, return_inverse=True)
        inverse = np.argsort(self.permutations, axis=1)
        total = np.zeros_like(fc)
        for k in range(group.max() + 1):
            ops = np.flatnonzero(group.ravel() == k)
            rot = self.rotations[ops[0]]
            rotated = np.einsum("ij,abjk,lk->abil", rot, fc, rot, optimize=True)
            for inv in inverse[ops]:
                total += rotated[np.ix_(inv, inv)]
        return total / self.n_operations

    def summary(self) -> dict[str, int | str]:
        """Counts for tables and logs.

        Returns:
            n_atoms, n_columns (3N), n_column_classes, n_independent_columns, n_operations,
            space_group_number and international symbol.
        """
        return {
            "n_atoms": self.n_atoms,
            "n_columns": 3 * self.n_atoms,
            "n_column_classes": len(self.column_orbits()),
            "n_independent_columns": len(self.independent_columns()),
            "n_operations": self.n_operations,
            "space_group_number": self.number,
            "international": self.international,
        }


def symmetrize_translational(force_constants: ArrayLike, level: int = 1) -> np.ndarray:
    """Impose the acoustic sum rule (and fc[a, b] = fc[b, a]^T) with phonopy's symmetriser.

    Args:
        force_constants: (N, N, 3, 3) full force constants, eV/Å².
        level: how many times phonopy alternates the two corrections.

    Returns:
        (N, N, 3, 3) new array with sum_b fc[a, b] = 0 for every a, eV/Å².
    """
    from phonopy.harmonic.force_constants import symmetrize_force_constants

    fc = np.array(force_constants, dtype="double", order="C", copy=True)
    if fc.ndim != 4 or fc.shape[0] != fc.shape[1] or fc.shape[2:] != (3, 3):
        raise ValueError(f"force constants must be full (N, N, 3, 3), got {fc.shape}")
    symmetrize_force_constants(fc, level=level)
    return fc


def _atom_permutations(
    fractional: np.ndarray,
    numbers: np.ndarray,
    lattice: np.ndarray,
    rotations: np.ndarray,
    translations: np.ndarray,
    symprec: float,
    atoms: ase.Atoms,
) -> np.ndarray:
    """(n_ops, N) atom each atom is mapped onto, matched within symprec across periodic images.

    A supercell's group is its lattice translations times one operation per rotation, so only
    those (n_rot + n_trans, not n_rot × n_trans) are matched atom by atom; every other operation
    (R, t) is the translation t − t_R after the representative (R, t_R) of its rotation, its
    permutation the composition of theirs, checked for all of them at once. A 250-atom diamond
    supercell's 6,000 operations take 0.1 s this way, 8 s matched one by one.
    """
    n = len(fractional)
    flat = np.round(rotations).astype(int).reshape(len(rotations), 9)
    _, first, which = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    rep_of = first[which.ravel()]
    pure = np.flatnonzero((flat == np.eye(3, dtype=int).ravel()).all(axis=1))
    direct = np.zeros(len(rotations), dtype=bool)
    direct[first] = direct[pure] = True
    wrapped = _wrap(fractional)
    tree = cKDTree(wrapped, boxsize=1.0)
    permutations = np.empty((len(rotations), n), dtype=int)
    for g in np.flatnonzero(direct):
        permutations[g] = _match_operation(g, fractional, numbers, lattice, rotations[g], translations[g], symprec, atoms, tree)
    composed = np.flatnonzero(~direct)
    off = np.ones(len(composed), dtype=bool)
    chunk = max(1, (1 << 20) // max(n, len(pure), 1))  # operations per pass: arrays of ~1e6 3-vectors
    for c in range(0, len(composed) if len(pure) else 0, chunk):
        ops = composed[c : c + chunk]
        rep = rep_of[ops]
        gap = (translations[ops] - translations[rep])[:, None, :] - translations[pure][None, :, :]
        k = np.argmin(_squared_lengths(gap, lattice), axis=1)
        permutations[ops] = permutations[pure[k][:, None], permutations[rep]]
        moved = np.einsum("nj,gij->gni", fractional, rotations[ops]) + translations[ops][:, None, :]
        wrong = (_squared_lengths(moved - fractional[permutations[ops]], lattice) > symprec**2).any(axis=1)
        off[c : c + chunk] = wrong | (numbers[permutations[ops]] != numbers[None, :]).any(axis=1)
    for g in composed[off]:  # not a translation after its representative: match it (or say why not)
        permutations[g] = _match_operation(g, fractional, numbers, lattice, rotations[g], translations[g], symprec, atoms, tree)
    return permutations


def _wrap(fractional: np.ndarray) -> np.ndarray:
    """Fractional coordinates in [0, 1) (np.mod gives 1.0 for tiny negative numbers)."""
    wrapped = np.mod(fractional, 1.0)
    wrapped[wrapped >= 1.0] = 0.0
    return wrapped


def _squared_lengths(fractional_differences: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """|d|² in Å² of fractional differences (..., 3) at their nearest periodic image."""
    d = fractional_differences - np.round(fractional_differences)
    cartesian = d @ lattice
    return np.einsum("...i,...i->...", cartesian, cartesian)


def _match_operation(
    g: int,
    fractional: np.ndarray,
    numbers: np.ndarray,
    lattice: np.ndarray,
    rot: np.ndarray,
    trans: np.ndarray,
    symprec: float,
    atoms: ase.Atoms,
    tree: cKDTree,
) -> np.ndarray:
    """(N,) atom operation g = (rot, trans) maps each atom onto.

    The nearest atom in fractional coordinates (`tree` holds them, periodic), checked in Å; where
    that fails (a cell so skewed that fractional and Cartesian nearest differ, or no image),
    every pair is compared, and an operation with no match is an error that says where.
    """
    n = len(fractional)
    moved = fractional @ rot.T + trans
    _, image = tree.query(_wrap(moved))
    if (
        (_squared_lengths(moved - fractional[image], lattice) <= symprec**2).all()
        and (numbers[image] == numbers).all()
        and len(np.unique(image)) == n
    ):
        return image
    dist = np.sqrt(_squared_lengths(moved[:, None, :] - fractional[None, :, :], lattice))
    dist[numbers[:, None] != numbers[None, :]] = np.inf
    image = np.argmin(dist, axis=1)
    nearest = dist[np.arange(n), image]
    if np.any(nearest > symprec):
        a = int(np.argmax(nearest > symprec))
        raise SymmetryError(
            f"{atoms.get_chemical_formula()}: operation {g} maps atom {a} "
            f"({atoms.get_chemical_symbols()[a]}) onto no atom of the same species within "
            f"symprec = {symprec} Å (nearest {nearest[a]:.3g} Å)"
        )
    if len(np.unique(image)) != n:
        raise SymmetryError(
            f"{atoms.get_chemical_formula()}: operation {g} maps two atoms onto the same one "
            f"within symprec = {symprec} Å; atoms closer than symprec?"
        )
    return image
