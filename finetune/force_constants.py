"""Reference force constants in phonopy's compact form, and Hessian columns read from it.

The full (N, N, 3, 3) float64 array of a 300-atom supercell is 6.5 MB, and the MDR training
split has 8,510 of them. The compact form (n_prim, N, 3, 3) keeps only the rows of the atoms of
one primitive cell (phonopy's `full_fc_to_compact_fc`); every other row is one of them with the
atoms relabelled by the lattice translation t_i that takes atom i to its primitive atom p(i):
Φ_{i,a} = Φ_{p(i), t_i(a)}. So entry i of column (a, β) is

    Φ[i, a, :, β] = compact[p(i), t_i(a), :, β]

one gather of N 3-vectors. (Reading the column as row a, by Φ_{iα,aβ} = Φ_{aβ,iα}, costs the
same but also assumes the stored constants are exactly symmetric; this uses translations only,
which is what the compact form itself assumes, and is checked when it is made.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from phonon_eval.records import Record

__all__ = ["CompactForceConstants", "compact_force_constants", "hessian_column"]


@dataclasses.dataclass(frozen=True, eq=False)
class CompactForceConstants:
    """Force constants of an N-atom supercell in compact form.

    Attributes:
        fc: (n_prim, N, 3, 3) eV/Å², the rows of the primitive atoms (phonopy's p2s order).
        primitive: (N,) index into `fc` of the primitive atom each supercell atom translates to.
        translation: (N,) row of `permutations` that takes each atom to that primitive atom.
        permutations: (n_trans, N) phonopy's `atomic_permutations`: translation t moves atom j
            onto atom permutations[t, j].
    """

    fc: np.ndarray
    primitive: np.ndarray
    translation: np.ndarray
    permutations: np.ndarray

    @property
    def n_atoms(self) -> int:
        return self.fc.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.fc, self.primitive, self.translation, self.permutations))

    def column(self, atom: int, direction: int) -> np.ndarray:
        """Φ[:, atom, :, direction], (N, 3) eV/Å²."""
        return self.fc[self.primitive, self.permutations[self.translation, atom], :, direction]

    def full(self) -> np.ndarray:
        """Φ, (N, N, 3, 3) eV/Å² (for checks and small cells: it is what the compact form avoids)."""
        return self.fc[self.primitive[:, None], self.permutations[self.translation]]


def compact_force_constants(record: Record, dtype: np.dtype | type = np.float32) -> CompactForceConstants:
    """The record's force constants (stored, or produced by phonopy) in compact form.

    Args:
        record: the record; its supercell atom order is phonopy's, as `Record.supercell`.
        dtype: of the stored constants; the loss is computed in the potential's dtype, so
            float32 loses nothing for a float32 potential.
    """
    from phonopy.harmonic.force_constants import compact_fc_to_full_fc, full_fc_to_compact_fc

    ph = record.to_phonopy(symmetry=False)  # the cells and lattice translations suffice
    full = np.asarray(ph.force_constants)
    prim = ph.primitive
    perms = np.asarray(prim.atomic_permutations)
    n = full.shape[0]
    p2p = prim.p2p_map
    primitive = np.array([p2p[s] for s in prim.s2p_map])
    representative = np.asarray(prim.p2s_map)[primitive]
    hits = perms == representative[None, :]  # (n_trans, N): translation t moves atom a onto it
    if not hits.any(axis=0).all():
        raise ValueError(
            f"{record.source}: material {record.id!r}, field 'primitive_matrix': phonopy finds no "
            "lattice translation from some supercell atoms to the primitive cell"
        )
    compact = full_fc_to_compact_fc(prim, full)
    # the compact form holds the full constants only if they are translation invariant
    # (phonopy's and MDR's are by construction: MDR stores the compact form)
    expanded = compact_fc_to_full_fc(prim, compact)
    gap = float(np.abs(expanded - full).max())
    if gap > 1e-6 * max(1.0, float(np.abs(full).max())):
        raise ValueError(
            f"{record.source}: material {record.id!r}, field 'force_constants': not invariant under "
            f"the supercell's lattice translations (off by up to {gap:.3g} eV/Å²), so the compact "
            "form would change them"
        )
    index = np.uint16 if n < 2**16 else np.int64  # the permutation table is n_trans × N
    return CompactForceConstants(
        fc=np.ascontiguousarray(compact, dtype=dtype),
        primitive=primitive.astype(index),
        translation=hits.argmax(axis=0).astype(index),
        permutations=perms.astype(index),
    )


def hessian_column(fc: np.ndarray | CompactForceConstants, atom: int, direction: int) -> np.ndarray:
    """Column (atom, direction) of full (N, N, 3, 3) or compact force constants, (N, 3)."""
    if isinstance(fc, CompactForceConstants):
        return fc.column(atom, direction)
    return fc[:, atom, :, direction]
