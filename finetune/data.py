"""Training examples and fixed-shape batches.

Phonon examples come from records (the supercell at its reference geometry, its DFT force
constants, and a column sampler); upstream examples from frames with energy, forces and
(optionally) stress. Structures are grouped by padded graph size, and every batch of a group is
padded to the group's shape and batch size, so the step function compiles once per group.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Sequence

import ase
import ase.db
import ase.io
import jax
import jax.numpy as jnp
import numpy as np

from finetune.loss import Batch
from finetune.samplers import ColumnSampler, SamplerKind, make_sampler
from phonon_eval.graph import bucket
from phonon_eval.potential import Potential
from phonon_eval.records import Record
from phonon_eval.symmetry import ColumnSet, SupercellSymmetry

__all__ = ["Example", "phonon_examples", "upstream_examples", "read_frames", "Batcher"]


@dataclasses.dataclass
class Example:
    """One structure with its targets. `force_constants` and `sampler` only for phonon data."""

    id: str
    atoms: ase.Atoms
    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    force_constants: np.ndarray | None = None
    sampler: ColumnSampler | None = None
    classes: ColumnSet | None = None


def phonon_examples(records: Sequence[Record], sampler: SamplerKind = "uniform", *, need_energy: bool = False) -> list[Example]:
    """Phonon examples: supercell at the reference geometry, zero forces and stress (DFT equilibrium).

    The energy target is the record's stored energy per atom times N when it has one; it is
    only used if λE > 0, and then (`need_energy`) a record without one is refused by name.
    """
    out = []
    for record in records:
        atoms = record.supercell()
        n = len(atoms)
        classes = SupercellSymmetry.from_atoms(atoms).column_orbits()
        ref = record.reference
        if need_energy and "energy" not in ref:
            raise ValueError(
                f"{record.source}: material {record.id!r}, field 'energy': missing or NaN, "
                "but energy_weight > 0 trains on it (set energy_weight = 0, or leave this record out)"
            )
        energy = float(ref["energy"]) / float(ref.get("nsites", len(record.unitcell))) * n if "energy" in ref else 0.0
        out.append(
            Example(
                id=record.id,
                atoms=atoms,
                energy=energy,
                forces=np.zeros((n, 3)),
                stress=np.zeros((3, 3)),
                force_constants=record.full_force_constants(),
                sampler=make_sampler(sampler, n, classes),
                classes=classes,
            )
        )
    return out


def read_frames(path: str | Path) -> list[ase.Atoms]:
    """Frames with energy and forces (stress optional) from extxyz or an ASE database."""
    path = Path(path)
    if path.suffix == ".db":
        with ase.db.connect(path) as db:
            return [row.toatoms(add_additional_information=True) for row in db.select()]
    return ase.io.read(path, ":")


def upstream_examples(frames: Sequence[ase.Atoms], source: str = "") -> list[Example]:
    """Energy/force/stress examples; a frame without energy or forces is refused by name."""
    out = []
    for i, atoms in enumerate(frames):
        try:
            energy = atoms.get_potential_energy()
            forces = atoms.get_forces()
        except Exception as err:
            raise ValueError(f"{source}: frame {i} has no energy or forces ({err})") from None
        try:
            stress = atoms.get_stress(voigt=False)
        except Exception:
            stress = None
        out.append(Example(id=f"{source}#{i}", atoms=atoms.copy(), energy=float(energy), forces=forces, stress=stress))
    return out


class Batcher:
    """Fixed-shape batches of examples, grouped by padded size.

    Args:
        potential: gives species and cutoff for the graphs (built once per example).
        examples: the examples.
        batch_size: structures per batch (short batches are padded with masked copies).
        max_padding: a size bucket joins the next larger one (same atom count) when padding its
            edges that far costs at most this factor. Every group is one compilation of the step,
            which on CPU takes far longer than the padded work it saves on a small dataset.
    """

    def __init__(self, potential: Potential, examples: Sequence[Example], batch_size: int, max_padding: float = 1.5):
        if not examples:
            raise ValueError("no examples to batch")
        self.examples = list(examples)
        self.batch_size = batch_size
        graphs = [potential.graph(e.atoms) for e in self.examples]
        buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, g in enumerate(graphs):
            buckets[(g.n_nodes, bucket(g.n_edges, per_octave=4))].append(i)
        groups: dict[tuple[int, int], list[int]] = {}
        for n_nodes, n_edges in sorted(buckets, reverse=True):  # largest first: it absorbs the smaller
            target = next((k for k in groups if k[0] == n_nodes and k[1] <= max_padding * n_edges), None)
            groups.setdefault(target or (n_nodes, n_edges), []).extend(buckets[(n_nodes, n_edges)])
        self.groups = {key: sorted(members) for key, members in groups.items()}
        # each example's graph padded to its group's shape
        self._graphs = {}
        for (n_nodes, _), members in self.groups.items():
            n_edges = max(graphs[i].n_edges for i in members)
            for i in members:
                self._graphs[i] = potential.graph(self.examples[i].atoms, n_nodes=n_nodes, n_edges=n_edges)
        self.dtype = potential.dtype
        self.has_columns = any(e.force_constants is not None for e in self.examples)

    def batches(self) -> Iterator[list[int]]:
        """Index lists covering every example once, in a fixed order (for evaluation)."""
        for members in self.groups.values():
            for k in range(0, len(members), self.batch_size):
                yield members[k : k + self.batch_size]

    def epoch(self, rng: np.random.Generator) -> Iterator[list[int]]:
        """Index lists of one shuffled epoch, one group per batch."""
        batches = []
        for members in self.groups.values():
            order = rng.permutation(members)
            batches += [list(order[k : k + self.batch_size]) for k in range(0, len(order), self.batch_size)]
        for k in rng.permutation(len(batches)):
            yield batches[k]

    def make(self, indices: list[int], rng: np.random.Generator | None, columns: list[tuple[int, int]] | None = None) -> Batch:
        """The batch of `indices`; columns drawn from each sampler (or given explicitly)."""
        idx = list(indices) + [indices[-1]] * (self.batch_size - len(indices))
        mask = np.array([1.0] * len(indices) + [0.0] * (self.batch_size - len(indices)))
        n_nodes = self._graphs[idx[0]].n_nodes
        dt = self.dtype
        pos = np.zeros((len(idx), n_nodes, 3), dt)
        forces = np.zeros_like(pos)
        vector = np.zeros_like(pos)
        column = np.zeros_like(pos)
        stress = np.zeros((len(idx), 3, 3), dt)
        has_stress, weight, energy, n_atoms, cell = [], [], [], [], []
        for k, i in enumerate(idx):
            ex = self.examples[i]
            n = len(ex.atoms)
            pos[k, :n] = ex.atoms.positions
            forces[k, :n] = ex.forces
            if ex.stress is not None:
                stress[k] = ex.stress
            has_stress.append(float(ex.stress is not None))
            energy.append(ex.energy)
            n_atoms.append(n)
            cell.append(ex.atoms.cell.array)
            w = 0.0
            if ex.force_constants is not None:
                if columns is not None:
                    atom, direction, w = columns[k][0], columns[k][1], 1.0
                else:
                    atom, direction, w = ex.sampler.draw(rng)
                vector[k, atom, direction] = 1.0
                column[k, :n] = ex.force_constants[:, atom, :, direction]
            weight.append(w)
        graph = jax.tree.map(lambda *xs: jnp.stack(xs), *[self._graphs[i] for i in idx])
        return Batch(
            graph=graph,
            positions=jnp.asarray(pos),
            cell=jnp.asarray(np.asarray(cell), dt),
            n_atoms=jnp.asarray(n_atoms, dt),
            energy=jnp.asarray(energy, dt),
            forces=jnp.asarray(forces),
            stress=jnp.asarray(stress),
            has_stress=jnp.asarray(has_stress, dt),
            vector=jnp.asarray(vector),
            column=jnp.asarray(column),
            column_weight=jnp.asarray(weight, dt),
            mask=jnp.asarray(mask, dt),
        )
