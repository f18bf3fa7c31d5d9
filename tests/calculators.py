"""Models for the provider tests, importable by spec (`calculators:NaNForces`) from tests/."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from phonon_eval.provider import ForceProvider

# Lennard-Jones for Cu (Halicioglu & Pound 1975), shifted to zero at a cutoff between the third
# and fourth neighbour shells of fcc: no pair sits near the cutoff, where the forces jump
LJ_CU = {"epsilon": 0.4093, "sigma": 2.338, "cutoff": 5.0}


def lennard_jones(params, positions, cell, numbers):
    """Lennard-Jones energy (eV) over the 27 nearest images: cells at least `cutoff` wide.

    The same function as ASE's `LennardJones(smooth=False)`: pair energies shifted by their value
    at the cutoff.
    """
    eps, sigma, rc = params["epsilon"], params["sigma"], params["cutoff"]
    n = jnp.arange(-1, 2)
    images = jnp.stack(jnp.meshgrid(n, n, n, indexing="ij"), axis=-1).reshape(-1, 3)
    d = positions[None, :, None] - positions[:, None, None] + (images @ cell)[None, None]
    r2 = jnp.sum(d**2, axis=-1)
    pair = (r2 > 1e-8) & (r2 < rc**2)  # no self pair; where() keeps its gradient finite
    s6 = (sigma**2 / jnp.where(pair, r2, 1.0)) ** 3
    shift = 4 * eps * ((sigma / rc) ** 12 - (sigma / rc) ** 6)
    return 0.5 * jnp.sum(jnp.where(pair, 4 * eps * (s6**2 - s6) - shift, 0.0))


class NaNForces(EMT):
    """EMT whose forces are NaN: what a broken model returns."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results["forces"] = np.full_like(self.results["forces"], np.nan)


class WrongShape(EMT):
    """EMT whose forces have one atom too few."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results["forces"] = self.results["forces"][:-1]


class Counting(Calculator):
    """Wraps a calculator and counts its calls (how many structures the route computed)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, inner: Calculator, **kwargs):
        super().__init__(**kwargs)
        self.inner, self.calls = inner, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        self.inner.calculate(self.atoms, properties, system_changes)
        self.results = dict(self.inner.results)


class PairLJ(eqx.Module):
    """Lennard-Jones as an EdgeModel (per-atom energies from the neighbour graph's edge vectors),
    the form `phonon_eval.Potential` and the fine-tuner take: a non-Nequix model for PFT."""

    epsilon: jax.Array
    sigma: jax.Array
    cutoff: float = eqx.field(static=True)

    def node_energies(self, vectors, species, senders, receivers):
        r2 = jnp.sum(vectors**2, axis=-1)
        inside = r2 < self.cutoff**2  # padded edges lie beyond the cutoff
        s6 = (self.sigma**2 / jnp.where(inside, r2, 1.0)) ** 3
        shift = 4 * self.epsilon * ((self.sigma / self.cutoff) ** 12 - (self.sigma / self.cutoff) ** 6)
        pair = jnp.where(inside, 4 * self.epsilon * (s6**2 - s6) - shift, 0.0)
        # every pair appears twice in the full neighbour list
        return 0.5 * jax.ops.segment_sum(pair, receivers, num_segments=species.shape[0])


class ReplayForces(ForceProvider):
    """A model that returns a record's own DFT forces for its own displaced supercells: the
    reference's data given to the model side."""

    name = "replay"
    has_hessian = False

    def __init__(self, supercells, forces):
        self.positions = np.array([s.positions for s in supercells])
        self.stored = np.asarray(forces, dtype=float)

    def calculator(self):
        raise RuntimeError("replayed forces cannot relax a structure")

    def forces(self, atoms, positions):
        out = []
        for r in positions:
            hit = np.flatnonzero(np.abs(self.positions - r[None]).max(axis=(1, 2)) < 1e-8)
            if len(hit) != 1:
                raise ValueError("a displaced supercell the record has no forces for")
            out.append(self.stored[hit[0]])
        return np.array(out)

    def provenance(self):
        return {"model": self.name, "model_kind": "replay"}
