"""The PFT loss: energy, forces, stress and one Hessian column per structure, from one pass.

For each structure, one forward-mode JVP of the reverse-mode (energy, gradient) function along
(v, 0) gives the energy, the forces, the virial and the Hessian-vector product H·v together, so
the Hessian column costs one HVP and the Hessian is never materialised:

    L = λE |Ê/N − E/N| + λF (1/N) Σ_a |F̂_a − F_a|² + λσ (1/9) Σ_ij |σ̂_ij − σ_ij| + λΦ (1/3N) Σ |Ĥv − Φv|

(the seed's definitions, with v a Hessian column). For the projection probes of
`finetune.probes` the Hessian term is squared instead, ‖Ĥv − Φv‖² / (3N ‖v‖²) ("mse"). With K
probes per structure the (energy, gradient) function is linearised once and its linear map
pushes the K vectors (the forward pass and the reverse pass's residuals shared); the term is the
mean of the K probes' terms, each times its sampler weight. A batch is several structures padded
to one shape and vmapped.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from phonon_eval.derivatives import over_leading_axis
from phonon_eval.graph import Graph
from phonon_eval.potential import Potential

__all__ = ["Batch", "LossWeights", "structure_terms", "batch_loss", "batch_errors"]


class LossWeights(NamedTuple):
    """λE, λF, λσ, λΦ (dynamic, so changing them does not recompile)."""

    energy: float = 0.0
    forces: float = 20.0
    stress: float = 5.0
    hessian: float = 100.0


class Batch(eqx.Module):
    """B structures padded to one shape. Targets are in eV, eV/Å, eV/Å³ and eV/Å².

    Attributes:
        graph: stacked Graph (arrays with a leading B axis).
        positions: (B, n_nodes, 3); cell: (B, 3, 3); n_atoms: (B,) real atom counts.
        energy: (B,); forces: (B, n_nodes, 3); stress: (B, 3, 3); has_stress: (B,) 0/1.
        vector: (B, K, n_nodes, 3) the K probes v of each structure: unit vectors of sampled
            columns or projection probes (zeros: no probe).
        column: (B, K, n_nodes, 3) the reference products Φ·v; column_weight: (B, K) sampler
            weights (0: no probe).
        mask: (B,) 1 for real structures, 0 for batch padding.
    """

    graph: Graph
    positions: jax.Array
    cell: jax.Array
    n_atoms: jax.Array
    energy: jax.Array
    forces: jax.Array
    stress: jax.Array
    has_stress: jax.Array
    vector: jax.Array
    column: jax.Array
    column_weight: jax.Array
    mask: jax.Array


def _predict(potential: Potential, graph: Graph, positions: jax.Array, cell: jax.Array, vectors: jax.Array | None):
    """Energy, forces, stress and H·v (K, n_nodes, 3) of one structure for its K probes `vectors`:
    one JVP over (value, grad) for K = 1, one linearisation and K pushes otherwise.

    Without vectors (upstream data) the JVP is skipped and H·v is zero.
    """

    def energy(x):
        r, strain = x
        deform = jnp.eye(3, dtype=cell.dtype) + (strain + strain.T) / 2
        return potential.energy(graph, r @ deform, cell @ deform)

    value_and_grad = jax.value_and_grad(energy)
    zero = jnp.zeros((3, 3), cell.dtype)
    if vectors is None:
        e, (g, virial) = value_and_grad((positions, zero))
        hv = jnp.zeros_like(positions)[None]
    elif vectors.shape[0] == 1:
        (e, (g, virial)), (_, (hv, _)) = jax.jvp(value_and_grad, ((positions, zero),), ((vectors[0], zero),))
        hv = hv[None]
    else:
        (e, (g, virial)), push = jax.linearize(value_and_grad, (positions, zero))
        hv = over_leading_axis(lambda v: push((v, zero))[1][0], vectors)
    volume = jnp.abs(jnp.linalg.det(cell))
    return e, -g, virial / volume, hv


def structure_terms(
    potential: Potential, graph: Graph, positions, cell, n_atoms, energy, forces, stress, vector, column, weight,
    with_column=True, hessian_loss="mae",
):
    """Per-structure loss terms (LE, LF, Lσ, LΦ), before the λ weights; `vector`, `column` (K, n, 3)
    and `weight` (K,) are the structure's probes, their Φ·v and sampler weights."""
    e, f, s, hv = _predict(potential, graph, positions, cell, vector if with_column else None)
    node = graph.node_mask[None, :, None]
    le = jnp.abs(e - energy) / n_atoms
    lf = jnp.sum(jnp.where(node[0], (f - forces) ** 2, 0.0)) / n_atoms
    ls = jnp.mean(jnp.abs(s - stress))
    if hessian_loss == "mae":
        lphi = jnp.sum(jnp.where(node, jnp.abs(hv - column), 0.0), axis=(1, 2)) / (3 * n_atoms)
    else:  # a structure without a probe has v = 0: its term is 0, not 0 / 0
        norm = jnp.maximum(jnp.sum(vector**2, axis=(1, 2)), 1.0)
        lphi = jnp.sum(jnp.where(node, (hv - column) ** 2, 0.0), axis=(1, 2)) / (3 * n_atoms * norm)
    return jnp.stack([le, lf, ls, jnp.mean(weight * lphi)])


def batch_loss(
    potential: Potential, batch: Batch, weights: jax.Array, with_column: bool = True, hessian_loss: str = "mae"
) -> tuple[jax.Array, jax.Array]:
    """Weighted loss averaged over the real structures, and the mean terms (4,) for logging.

    `with_column=False` (static) drops the HVP for batches without columns (co-training);
    `hessian_loss` (static) is "mae" (the seed's, for columns) or "mse" (`finetune.probes`).
    """
    one = partial(structure_terms, with_column=with_column, hessian_loss=hessian_loss)
    terms = jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))(
        potential,
        batch.graph,
        batch.positions,
        batch.cell,
        batch.n_atoms,
        batch.energy,
        batch.forces,
        batch.stress,
        batch.vector,
        batch.column,
        batch.column_weight,
    )  # (B, 4)
    # a structure without stress data contributes no such term (one without a probe has weight 0)
    terms = terms.at[:, 2].multiply(batch.has_stress)
    n = jnp.maximum(batch.mask.sum(), 1.0)
    mean_terms = (terms * batch.mask[:, None]).sum(axis=0) / n
    return jnp.dot(mean_terms, weights), mean_terms


@eqx.filter_jit
def batch_errors(potential: Potential, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Per structure: |Ê − E| / N (eV/atom) and the mean absolute force error (eV/Å) over the
    real atoms' components; for validation on the training shapes (no new compilations per size)."""

    def one(graph, positions, cell, n_atoms, energy, forces):
        e, f, _, _ = _predict(potential, graph, positions, cell, None)
        node = graph.node_mask[:, None]
        return jnp.abs(e - energy) / n_atoms, jnp.sum(jnp.where(node, jnp.abs(f - forces), 0.0)) / (3 * n_atoms)

    return jax.vmap(one)(batch.graph, batch.positions, batch.cell, batch.n_atoms, batch.energy, batch.forces)
