"""Training examples and fixed-shape batches.

Phonon examples come from records (the supercell at its reference geometry, its DFT force
constants in phonopy's compact form, and a column sampler); upstream examples from frames with
energy, forces and (optionally) stress, in memory or streamed from disk (`finetune.frames`).
Structures are grouped by padded graph size, and every batch of a group is padded to the group's
shape and batch size, so the step function compiles once per group. The grouping needs only each
structure's atom and edge counts; the graphs themselves are built per batch, when it is made.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import ase
import ase.db
import ase.io
import jax
import jax.numpy as jnp
import numpy as np

from finetune.force_constants import CompactForceConstants, compact_force_constants, hessian_column
from finetune.loss import Batch
from finetune.probes import PROBES, draw_probe, force_constant_product
from finetune.samplers import ColumnSampler, SamplerKind, make_sampler
from phonon_eval.graph import bucket, count_edges
from phonon_eval.potential import Potential
from phonon_eval.records import Record
from phonon_eval.symmetry import ColumnSet, SupercellSymmetry

__all__ = ["Example", "ExampleSource", "phonon_examples", "upstream_example", "upstream_examples", "read_frames", "Batcher", "Columns"]

Columns = list[tuple[int, int, float] | np.ndarray]
"""What each structure of a batch supervises: (atom, direction, weight) of a Hessian column, or
a projection probe v (N, 3) (`finetune.probes`)."""


@dataclasses.dataclass
class Example:
    """One structure with its targets. `force_constants` and `sampler` only for phonon data.

    `force_constants` is compact (what `phonon_examples` makes) or full (N, N, 3, 3), eV/Å².
    """

    id: str
    atoms: ase.Atoms
    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    force_constants: CompactForceConstants | np.ndarray | None = None
    sampler: ColumnSampler | None = None
    classes: ColumnSet | None = None

    def digest(self) -> str:
        """A short content hash of the structure and its targets (to recognise the training data)."""
        h = hashlib.sha256(self.id.encode())
        fc = self.force_constants
        arrays = [self.atoms.numbers, self.atoms.positions, self.atoms.cell.array, self.energy, self.forces, self.stress]
        arrays += [fc.fc] if isinstance(fc, CompactForceConstants) else [fc]
        for a in arrays:
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


class ExampleSource(Protocol):
    """Examples read on demand (`finetune.frames.FrameSource`): indexable, with the sizes that
    group them known without reading them."""

    has_columns: bool

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Example: ...

    def sizes(self, cutoff: float) -> tuple[np.ndarray, np.ndarray]: ...


def phonon_examples(
    records: Iterable[Record], sampler: SamplerKind = "uniform", *, need_energy: bool = False, dtype: np.dtype | type = np.float32
) -> list[Example]:
    """Phonon examples: supercell at the reference geometry, zero forces and stress (DFT equilibrium).

    The energy target is the record's stored energy per atom times N when it has one; it is
    only used if λE > 0, and then (`need_energy`) a record without one is refused by name.
    Records are used one at a time (pass a generator such as `Dataset.records(split)` to hold
    only the compact force constants, never every record's full ones).

    Args:
        records: the records.
        sampler: column sampler kind.
        need_energy: refuse a record without an energy.
        dtype: of the stored force constants: the potential's (the loss is computed in it).
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
                force_constants=compact_force_constants(record, dtype),
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


def upstream_example(atoms: ase.Atoms, source: str, i: int) -> Example:
    """Frame `i` of `source` as an energy/force/stress example; no energy or forces is refused by name."""
    try:
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
    except Exception as err:
        raise ValueError(f"{source}: frame {i} has no energy or forces ({err})") from None
    try:
        stress = atoms.get_stress(voigt=False)
    except Exception:
        stress = None
    return Example(id=f"{source}#{i}", atoms=atoms.copy(), energy=float(energy), forces=forces, stress=stress)


def upstream_examples(frames: Sequence[ase.Atoms], source: str = "") -> list[Example]:
    """Energy/force/stress examples of frames in memory; a frame without energy or forces is refused by name."""
    return [upstream_example(atoms, source, i) for i, atoms in enumerate(frames)]


class Batcher:
    """Fixed-shape batches of examples, grouped by padded size.

    Args:
        potential: gives species and cutoff for the graphs (built per batch).
        examples: the examples, in memory or read on demand (an `ExampleSource`).
        batch_size: structures per batch (short batches are padded with masked copies).
        probe: what each phonon structure's HVP is taken along (`finetune.probes.PROBES`): a
            column drawn by its sampler, or a projection probe drawn here.
        max_padding: a size bucket joins the next larger one (same atom count) when padding its
            edges that far costs at most this factor. Every group is one compilation of the step,
            which on CPU takes far longer than the padded work it saves on a small dataset.
    """

    def __init__(
        self, potential: Potential, examples: Sequence[Example] | ExampleSource, batch_size: int, max_padding: float = 1.5,
        probe: str = "column",
    ):
        if not len(examples):
            raise ValueError("no examples to batch")
        if probe not in PROBES:
            raise ValueError(f"unknown probe {probe!r} ({', '.join(PROBES)})")
        self.probe = probe
        self.examples = examples
        self.batch_size = batch_size
        self.potential = potential
        self.dtype = potential.dtype
        if isinstance(examples, Sequence):
            self.has_columns = any(e.force_constants is not None for e in examples)
            n_atoms = np.array([len(e.atoms) for e in examples])
            n_edges = np.array([count_edges(e.atoms.positions, e.atoms.cell.array, potential.cutoff, pbc=e.atoms.pbc) for e in examples])
        else:
            self.has_columns = examples.has_columns
            n_atoms, n_edges = examples.sizes(potential.cutoff)
        # the sizes `build_graph` pads a lone structure to: the keys of the groups
        nodes = np.array([bucket(n + 1) for n in n_atoms])
        edges = np.array([bucket(e) for e in n_edges])
        buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (n, e) in enumerate(zip(nodes.tolist(), edges.tolist())):
            buckets[(n, bucket(e, per_octave=4))].append(i)
        groups: dict[tuple[int, int], list[int]] = {}
        for n_nodes, n_e in sorted(buckets, reverse=True):  # largest first: it absorbs the smaller
            target = next((k for k in groups if k[0] == n_nodes and k[1] <= max_padding * n_e), None)
            groups.setdefault(target or (n_nodes, n_e), []).extend(buckets[(n_nodes, n_e)])
        # members as arrays: 1.6 million Python ints would cost more than the frames' index
        self.groups = {key: np.sort(np.asarray(m, dtype=np.int64)) for key, m in groups.items()}
        self._shape = np.zeros((len(examples), 2), dtype=np.int64)  # (n_nodes, n_edges) of its group
        for (n_nodes, _), members in self.groups.items():
            self._shape[members] = (n_nodes, edges[members].max())

    def batches(self) -> Iterator[list[int]]:
        """Index lists covering every example once, in a fixed order (for evaluation)."""
        for members in self.groups.values():
            for k in range(0, len(members), self.batch_size):
                yield members[k : k + self.batch_size].tolist()

    def epoch(self, rng: np.random.Generator) -> Iterator[list[int]]:
        """Index lists of one shuffled epoch, one group per batch."""
        orders = [rng.permutation(members) for members in self.groups.values()]
        starts = [(g, k) for g, order in enumerate(orders) for k in range(0, len(order), self.batch_size)]
        for b in rng.permutation(len(starts)):
            g, k = starts[b]
            yield orders[g][k : k + self.batch_size].tolist()

    def draw(self, indices: Sequence[int], rng: np.random.Generator) -> Columns | None:
        """What each structure of `indices` supervises: a column from its sampler, or a
        projection probe (None: no phonon data)."""
        if not self.has_columns:
            return None
        out: Columns = []
        for i in indices:
            ex = self.examples[i]
            if ex.force_constants is None or (self.probe == "column" and ex.sampler is None):
                out.append((0, 0, 0.0))
            elif self.probe == "column":
                out.append(ex.sampler.draw(rng))
            else:
                out.append(draw_probe(self.probe, len(ex.atoms), ex.classes, rng))
        return out

    def make(
        self, indices: Sequence[int], rng: np.random.Generator | None = None, columns: Sequence[tuple] | None = None
    ) -> Batch:
        """The batch of `indices`; columns drawn from each sampler, or given as (atom, direction)
        (weight 1) or (atom, direction, weight) per structure."""
        indices = [int(i) for i in indices]
        if columns is None and self.has_columns:
            columns = self.draw(indices, rng)
        examples = [self.examples[i] for i in indices]
        n_real = len(examples)
        examples += [examples[-1]] * (self.batch_size - n_real)  # masked copies
        mask = np.array([1.0] * n_real + [0.0] * (self.batch_size - n_real))
        n_nodes, n_edges = (int(x) for x in self._shape[indices[0]])
        dt = self.dtype
        pos = np.zeros((len(examples), n_nodes, 3), dt)
        forces = np.zeros_like(pos)
        vector = np.zeros_like(pos)
        column = np.zeros_like(pos)
        stress = np.zeros((len(examples), 3, 3), dt)
        has_stress, weight, energy, n_atoms, cell, graphs = [], [], [], [], [], []
        for k, ex in enumerate(examples):
            n = len(ex.atoms)
            pos[k, :n] = ex.atoms.positions
            forces[k, :n] = ex.forces
            if ex.stress is not None:
                stress[k] = ex.stress
            has_stress.append(float(ex.stress is not None))
            energy.append(ex.energy)
            n_atoms.append(n)
            cell.append(ex.atoms.cell.array)
            # a masked copy repeats the last structure: its graph too, not a second neighbour search
            graphs.append(self.potential.graph(ex.atoms, n_nodes=n_nodes, n_edges=n_edges) if k < n_real else graphs[-1])
            w = 0.0
            if ex.force_constants is not None and columns is not None:
                probe = columns[min(k, n_real - 1)]  # a masked copy repeats the last
                if isinstance(probe, np.ndarray):
                    w = 1.0
                    vector[k, :n] = probe
                    column[k, :n] = force_constant_product(ex.force_constants, probe)
                else:
                    atom, direction, *rest = probe
                    w = float(rest[0]) if rest else 1.0
                    vector[k, atom, direction] = 1.0
                    column[k, :n] = hessian_column(ex.force_constants, atom, direction)
            weight.append(w)
        graph = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *graphs)  # one transfer per leaf
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
