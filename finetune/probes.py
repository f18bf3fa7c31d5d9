"""Hessian probes: the vector v that each phonon structure's one HVP is taken along, and Φ·v.

Each step supervises Ĥv against Φv for one v per structure (Ĥ the model's Hessian, Φ the DFT
force constants, both 3N x 3N). What the loss term then estimates, over the draws of v:

- `column`: v = e_j, one Hessian column, drawn by a `ColumnSampler` (uniform, symmetry or cycle;
  the seed's method). With the seed's loss, the mean |Ĥv − Φv| over the column's 3N entries
  ("mae"), its expectation is the MAE over every entry of the Hessian; with "mse" the mean
  squared entry error (1/9N²) ‖Ĥ − Φ‖²_F.
- `rademacher`: random signs on all 3N coordinates. E[v vᵀ] = 1, so E ‖(Ĥ − Φ)v‖² = ‖Ĥ − Φ‖²_F
  (Hutchinson); one HVP sees every column at once.
- `symmetry`: v = Σ_c s_c √m_c e_c, random signs s_c over the K symmetry classes of columns
  (representative e_c, multiplicity m_c). E[v vᵀ] = Σ_c m_c e_c e_cᵀ, and the members of a class
  have the same column norm of Ĥ − Φ (both are invariant under the supercell's space group, Ĥ
  because the model is equivariant), so E ‖(Ĥ − Φ)v‖² = Σ_c m_c ‖(Ĥ − Φ)e_c‖² = ‖Ĥ − Φ‖²_F as
  well. For K = 1 (diamond Si, fcc metals) every draw gives it exactly; for K > 1 the variance
  is that of a K-term sum instead of a 3N-term one.

The projections are only unbiased for a squared loss: their term is "mse",
‖Ĥv − Φv‖² / (3N ‖v‖²), which for every kind estimates the mean squared entry error (eV/Å²)²,
so the three kinds share one scale and λΦ means the same for them. That scale is the square of
the "mae" scale: for a typical Hessian MAE of 0.05 eV/Å², an "mse" term of the same weight is
about 20 times smaller, and λΦ should grow accordingly.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from finetune.force_constants import CompactForceConstants
from phonon_eval.symmetry import ColumnSet

__all__ = ["PROBES", "HESSIAN_LOSSES", "ProbeKind", "draw_probe", "every_class", "force_constant_product", "hessian_loss_for"]

ProbeKind = Literal["column", "rademacher", "symmetry"]
PROBES = ("column", "rademacher", "symmetry")
HESSIAN_LOSSES = ("mae", "mse")


def hessian_loss_for(probe: str, loss: str | None = None) -> str:
    """The Hessian loss of a probe: `loss`, or by default "mae" (column) / "mse" (projections).

    Raises:
        ValueError: an unknown probe or loss, or "mae" with a projection (biased: the mean
            |(Ĥ − Φ)v| over random signs is not the Hessian MAE).
    """
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r} ({', '.join(PROBES)})")
    loss = loss or ("mae" if probe == "column" else "mse")
    if loss not in HESSIAN_LOSSES:
        raise ValueError(f"unknown hessian loss {loss!r} ({', '.join(HESSIAN_LOSSES)})")
    if loss == "mae" and probe != "column":
        raise ValueError(f"the {probe} probe estimates the squared Hessian error only: use hessian_loss mse")
    return loss


def draw_probe(kind: str, n_atoms: int, classes: ColumnSet | None, rng: np.random.Generator) -> np.ndarray:
    """A projection probe v, (N, 3), with ‖v‖² = 3N ("rademacher" or "symmetry")."""
    if kind == "rademacher":
        return rng.choice(np.array([-1.0, 1.0]), size=(n_atoms, 3))
    if kind == "symmetry":
        if classes is None:
            raise ValueError("the symmetry probe needs the structure's column classes")
        v = np.zeros((n_atoms, 3))
        signs = rng.choice(np.array([-1.0, 1.0]), size=len(classes))
        v[classes.atoms, classes.directions] = signs * np.sqrt(np.asarray(classes.multiplicity, dtype=float))
        return v
    raise ValueError(f"{kind!r} is not a projection probe (rademacher or symmetry)")


def every_class(classes: ColumnSet, n_atoms: int, k: int | None = None) -> list[tuple[int, int, float]]:
    """Every column class of a structure as K probes (atom, direction, weight), K = `k` or the
    number of classes (padded with zero-weight columns), whose term, the mean of the K weighted
    column terms, is the exact full-Hessian loss: Σ_c (m_c / 3N) L(e_c) over the classes.

    This is the expectation of every probe's term, and of its gradient (the members of a class
    have the same loss and gradient): the zero-variance step, at K HVPs per structure.
    """
    k = len(classes) if k is None else k
    if k < len(classes):
        raise ValueError(f"{len(classes)} classes do not fit in {k} probes")
    scale = k / (3 * n_atoms)
    out = [(int(a), int(d), scale * float(m)) for a, d, m in zip(classes.atoms, classes.directions, classes.multiplicity)]
    return out + [(0, 0, 0.0)] * (k - len(out))


def force_constant_product(fc: CompactForceConstants | np.ndarray, v: np.ndarray) -> np.ndarray:
    """Φ·v, (N, 3) eV/Å, from full (N, N, 3, 3) or compact force constants and v (N, 3).

    Compact: Φ[i, a] = fc[p(i), t_i(a)] (see `finetune.force_constants`), so row i is one
    gather of the primitive row p(i) in the order of translation t_i.
    """
    if isinstance(fc, CompactForceConstants):
        relabel = fc.permutations[fc.translation].astype(np.int64)  # (N, N): t_i(a)
        rows = fc.fc[fc.primitive[:, None].astype(np.int64), relabel]  # (N, N, 3, 3) = Φ[i, a]
        return np.einsum("iaxy,ay->ix", rows, v.astype(rows.dtype))
    return np.einsum("iaxy,ay->ix", fc, v)
