"""Which Hessian column each structure supervises at each step.

`uniform` draws any of the 3N columns with equal probability (the PFT paper). `symmetry` draws
only the representative of a symmetry class of columns, with probability multiplicity / 3N:
every member of a class has the same absolute entries (`SupercellSymmetry.column_orbits`), so
the column loss, and hence its expectation, is exactly that of uniform sampling. For an
equivariant model the members also share the parameter gradient, so the two samplers give the
same distribution of training steps: the classes buy coverage, not speed. `cycle` visits every
class of a structure once, in a shuffled order, before repeating one (a structure draws one
column each time it is in a batch), and weights each draw by n_classes · multiplicity / 3N, so
that the mean over a cycle equals the uniform expectation.

A sampler is a small object: `draw(rng) -> (atom, direction, weight)` for one structure; a cycling
sampler's `state` (the rest of its cycle) goes into the training state, so that resume is exact.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from phonon_eval.symmetry import ColumnSet

__all__ = ["ColumnSampler", "make_sampler", "SamplerKind"]

SamplerKind = Literal["uniform", "symmetry", "cycle"]


@dataclasses.dataclass
class ColumnSampler:
    """Draws (atom, direction, weight) for one structure.

    Attributes:
        atoms, directions: candidate columns.
        probabilities: their draw probabilities (None: cycle through them).
        weights: loss weight of each candidate (1 except when cycling).
    """

    atoms: np.ndarray
    directions: np.ndarray
    probabilities: np.ndarray | None
    weights: np.ndarray
    _order: list[int] = dataclasses.field(default_factory=list)

    def draw(self, rng: np.random.Generator) -> tuple[int, int, float]:
        if self.probabilities is not None:
            k = int(rng.choice(len(self.atoms), p=self.probabilities))
        else:
            if not self._order:
                self._order = list(rng.permutation(len(self.atoms)))
            k = int(self._order.pop())
        return int(self.atoms[k]), int(self.directions[k]), float(self.weights[k])

    @property
    def state(self) -> list[int]:
        """What the next draws depend on besides the rng: the rest of the cycle (empty otherwise)."""
        return [int(k) for k in self._order]

    def restore(self, state: list[int]) -> None:
        """Continue the cycle `state` left (from `state` of a sampler over the same columns)."""
        if any(not 0 <= k < len(self.atoms) for k in state):
            raise ValueError(f"cycle state {state} does not fit a sampler of {len(self.atoms)} columns")
        self._order = [int(k) for k in state]

    @property
    def n_candidates(self) -> int:
        return len(self.atoms)


def make_sampler(kind: SamplerKind, n_atoms: int, classes: ColumnSet | None = None) -> ColumnSampler:
    """A sampler over the columns of an N-atom structure.

    Args:
        kind: "uniform", "symmetry" or "cycle".
        n_atoms: N.
        classes: the structure's column classes (needed for "symmetry" and "cycle").
    """
    if kind == "uniform":
        n = 3 * n_atoms
        idx = np.arange(n)
        return ColumnSampler(idx // 3, idx % 3, np.full(n, 1.0 / n), np.ones(n))
    if classes is None:
        raise ValueError(f"the {kind!r} sampler needs the structure's column classes")
    mult = np.asarray(classes.multiplicity, dtype=float)
    if not np.isclose(mult.sum(), 3 * n_atoms):
        raise ValueError(f"multiplicities sum to {mult.sum()}, not 3N = {3 * n_atoms}")
    p = mult / mult.sum()
    if kind == "symmetry":
        return ColumnSampler(classes.atoms, classes.directions, p, np.ones(len(p)))
    if kind == "cycle":
        return ColumnSampler(classes.atoms, classes.directions, None, len(p) * p)
    raise ValueError(f"unknown sampler {kind!r} (uniform, symmetry or cycle)")
