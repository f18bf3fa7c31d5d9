"""The HVP of the built-in potential against the public nequix package's, side by side in one run.

Si 64 atoms (mp-149 supercell), nequix-mp-1, one Hessian column by forward-over-reverse on both
sides; medians of 5 calls after compilation. Ours is timed on the graph padded to the shared
bucket sizes the evaluators use (so that similar structures share one compilation) and on a graph
padded to exactly this structure's sizes, which is what the public package runs. Needs the public
package in the environment (a reference, never a dependency):
`pip install --no-deps nequix==0.4.5 jraph matscipy`.

    python benchmarks/hvp_public.py
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import shared_dir

import phonon_eval as pe
from phonon_eval.potential import _hvp


def median_seconds(f, n: int = 5) -> float:
    jax.block_until_ready(f())
    times = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t)
    return sorted(times)[n // 2]


def main() -> None:
    try:
        from nequix.calculator import NequixCalculator
        from nequix.data import dict_to_graphstuple, preprocess_graph
    except ImportError:
        sys.exit("the public nequix package is not installed: pip install --no-deps nequix==0.4.5 jraph matscipy")
    shared = shared_dir()
    weights = shared / "models" / "nequix-mp-1.nqx"
    atoms = pe.read_record(shared / "data" / "mdr" / "mp-149.yaml").supercell()

    calc = NequixCalculator(model_path=str(weights), backend="jax", use_kernel=False)
    g = dict_to_graphstuple(preprocess_graph(atoms, calc.atom_indices, calc.cutoff, False))
    offsets = jnp.einsum("ij,jk->ik", g.edges["shifts"], g.globals["cell"][0])

    def energy(positions):
        r = positions[g.senders] - positions[g.receivers] + offsets
        return jnp.sum(calc.model.node_energies(r, g.nodes["species"], g.senders, g.receivers))

    positions = g.nodes["positions"]
    v = jnp.zeros(positions.size).at[0].set(1.0).reshape(positions.shape)
    public_hvp = jax.jit(lambda p, v: jax.jvp(jax.grad(energy), (p,), (v,))[1])
    public = median_seconds(lambda: public_hvp(positions, v))
    print(f"public nequix 0.4.5: {len(atoms)} atoms, {len(g.senders)} edges: {public * 1e3:.0f} ms per HVP")

    potential = pe.load_potential(weights)
    for label, pad in (("bucketed (as evaluated)", {}), ("exact sizes", {"n_nodes": len(atoms) + 1, "n_edges": len(g.senders)})):
        graph = potential.graph(atoms, **pad)
        p = np.zeros((graph.n_nodes, 3), np.float32)
        p[: len(atoms)] = atoms.positions
        u = np.zeros_like(p)
        u[0, 0] = 1.0
        cell = jnp.asarray(atoms.cell.array, jnp.float32)
        ours = median_seconds(lambda: _hvp(potential, graph, jnp.asarray(p), cell, jnp.asarray(u)))
        print(f"ours, {label}: {graph.n_nodes} nodes, {graph.n_edges} edges: {ours * 1e3:.0f} ms per HVP, {ours / public:.3f}x the public package's")


if __name__ == "__main__":
    main()
