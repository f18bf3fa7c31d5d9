"""The PFT trainer: optax optimiser, EMA weights, co-training, validation and exact resume.

One phonon step is followed by `cotrain_ratio` steps on upstream energy/force/stress data
(the public configuration: 4), each with its own loss weights. Validation uses the EMA weights:
the Hessian MAE of held-out records over all columns (exactly, from the class representatives
weighted by multiplicity) and the energy/force MAE of held-out upstream frames.

Every random choice of an epoch (shuffles, sampled columns) is made in order on the main thread;
a background thread only reads the next batch's frames and builds its graphs while the current
step runs, so the numbers do not depend on it. The training state holds the RNG, every cycling
sampler's place, and a fingerprint of the data, so a resumed run continues exactly, and only on
the data it was trained on.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from finetune.data import Batcher, Columns, Example, ExampleSource
from finetune.force_constants import hessian_column
from finetune.loss import LossWeights, batch_errors, batch_loss
from finetune.probes import hessian_loss_for
from phonon_eval.atomic import atomic_write
from phonon_eval.checkpoint import save_potential
from phonon_eval.potential import Potential, hessian_columns

__all__ = ["TrainConfig", "Trainer", "optimizer", "hessian_mae", "efs_mae", "check_devices", "data_fingerprint"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; defaults from the public PFT configuration where it has them."""

    epochs: int = 10
    batch_size: int = 4
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    schedule: str = "cosine"  # or "constant"
    optimizer: str = "adamw"  # or "adam"
    weight_decay: float = 1e-3
    grad_clip_norm: float = 100.0
    ema_decay: float = 0.999
    sampler: str = "uniform"  # "symmetry" with --symmetry-sampling, or "cycle"
    probe: str = "column"  # or "rademacher", "symmetry" (finetune.probes)
    probes_per_structure: int = 1  # K HVPs per phonon structure and step, from one linearisation
    hessian_loss: str = ""  # "mae" or "mse"; "": mae for columns, mse for the projections
    val_every: int = 0  # epochs between phonon-property validations (finetune.validation); 0: never
    select_by: str = ""  # keep the checkpoint that is best by this validation metric (lower is better)
    energy_weight: float = 0.0
    force_weight: float = 20.0
    stress_weight: float = 5.0
    hessian_weight: float = 100.0
    cotrain_ratio: int = 4
    cotrain_energy_weight: float = 500.0
    cotrain_force_weight: float = 200.0
    cotrain_stress_weight: float = 50.0
    cotrain_batch_size: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        hessian_loss_for(self.probe, self.hessian_loss)  # raises for an unknown or biased choice
        if self.probes_per_structure < 1:
            raise ValueError(f"probes_per_structure must be at least 1, got {self.probes_per_structure}")
        if self.probe != "column" and self.sampler != "uniform":
            raise ValueError(f"the {self.sampler} sampler draws columns; the {self.probe} probe draws its own vectors")

    def phonon_weights(self) -> LossWeights:
        return LossWeights(self.energy_weight, self.force_weight, self.stress_weight, self.hessian_weight)

    def cotrain_weights(self) -> LossWeights:
        return LossWeights(self.cotrain_energy_weight, self.cotrain_force_weight, self.cotrain_stress_weight, 0.0)


def _decay_mask(params: Any) -> Any:
    """Weight decay on weight matrices only (not norms, not reference energies)."""
    return jax.tree.map(lambda x: x is not None and x.ndim >= 2, params, is_leaf=lambda x: x is None)


@functools.lru_cache(maxsize=16)
def optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Clip, then Adam/AdamW with warm-up and a cosine or constant schedule.

    Cached: the step function is compiled per optimizer object, so equal settings share one.
    """
    if config.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0 if config.warmup_steps else config.learning_rate,
            config.learning_rate,
            config.warmup_steps,
            max(total_steps, config.warmup_steps + 1),
            end_value=0.0,
        )
    elif config.schedule == "constant":
        schedule = optax.join_schedules(
            [optax.linear_schedule(0.0, config.learning_rate, max(config.warmup_steps, 1)), optax.constant_schedule(config.learning_rate)],
            [config.warmup_steps],
        ) if config.warmup_steps else optax.constant_schedule(config.learning_rate)
    else:
        raise ValueError(f"unknown schedule {config.schedule!r} (cosine or constant)")
    if config.optimizer == "adamw":
        opt = optax.adamw(schedule, weight_decay=config.weight_decay, mask=_decay_mask)
    elif config.optimizer == "adam":
        opt = optax.adam(schedule)
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r} (adam or adamw)")
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)


def _params(potential: Potential):
    return eqx.filter(potential, eqx.is_inexact_array)


def _place(tree: Any, where: jax.sharding.Sharding | jax.Device) -> Any:
    """`tree` with its arrays moved to a device or sharding (other leaves untouched)."""
    arrays, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.device_put(arrays, where), static)


@eqx.filter_jit
def _step(potential, opt_state, ema, batch, weights, decay, opt, with_column, hessian_loss, replicated):
    def loss_fn(p):
        return batch_loss(p, batch, weights, with_column, hessian_loss)

    (loss, terms), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(potential)
    updates, opt_state = opt.update(grads, opt_state, _params(potential))
    potential = eqx.apply_updates(potential, updates)
    ema = jax.tree.map(
        lambda e, p: decay * e + (1 - decay) * p if eqx.is_inexact_array(p) else e, ema, potential
    )
    if replicated is not None:
        # outputs laid out like the inputs, so the next step reuses this compilation
        potential, opt_state, ema = eqx.filter_shard((potential, opt_state, ema), replicated)
    return potential, opt_state, ema, loss, terms


def hessian_mae(potential: Potential, examples: Sequence[Example]) -> float:
    """Mean absolute error of the full Hessian over phonon examples, eV/Å².

    Computed exactly from one HVP per column class: every member of a class has the same absolute
    errors (signed permutations), so the full mean is the multiplicity-weighted mean.
    """
    maes = []
    for ex in examples:
        pairs = ex.classes.pairs()
        cols = hessian_columns(potential, ex.atoms, pairs)
        ref = np.stack([hessian_column(ex.force_constants, a, d) for a, d in pairs])
        per_class = np.abs(cols - ref).mean(axis=(1, 2))
        maes.append(float(np.dot(per_class, ex.classes.multiplicity) / ex.classes.multiplicity.sum()))
    return float(np.mean(maes)) if maes else float("nan")


def efs_mae(
    potential: Potential, examples: Sequence[Example] | ExampleSource | Batcher, batch_size: int = 4
) -> tuple[float, float]:
    """(energy MAE per atom in eV/atom, force MAE per component in eV/Å) over upstream examples.

    Evaluated in padded batches; pass the Batcher of the examples to reuse its shapes.
    """
    batcher = examples if isinstance(examples, Batcher) else (Batcher(potential, examples, batch_size) if len(examples) else None)
    if batcher is None:
        return float("nan"), float("nan")
    de, df = [], []
    for indices in batcher.batches():
        e, f = batch_errors(potential, batcher.make(indices, None))
        de.extend(np.asarray(e)[: len(indices)])
        df.extend(np.asarray(f)[: len(indices)])
    return float(np.mean(de)), float(np.mean(df))


class Trainer:
    """Holds the state of a run; `run` trains, validates each epoch, checkpoints, and resumes.

    Args:
        potential: the starting potential (its parameters are trained).
        config: hyperparameters.
        train: phonon training examples.
        val: phonon validation examples.
        cotrain, cotrain_val: upstream energy/force/stress examples, in memory or streamed
            (`finetune.frames.FrameSource`); may be empty.
        devices: data parallelism over the first `devices` of `jax.devices()`: each batch is
            split along its leading axis, the weights are replicated, and the loss (hence the
            gradient) is the mean over the global batch, so the numbers do not depend on it.
        data: what else names the data (split names, ...), kept in the training state with the
            fingerprint of the examples; resuming on other data is refused.
    """

    def __init__(
        self,
        potential: Potential,
        config: TrainConfig,
        train: Sequence[Example],
        val: Sequence[Example] = (),
        cotrain: Sequence[Example] | ExampleSource = (),
        cotrain_val: Sequence[Example] | ExampleSource = (),
        devices: int = 1,
        data: dict[str, Any] | None = None,
    ):
        check_devices(devices, config, bool(len(train)), bool(len(cotrain)))
        self.config = config
        self.devices = devices
        self.hessian_loss = hessian_loss_for(config.probe, config.hessian_loss)
        self.train = Batcher(potential, train, config.batch_size, probe=config.probe, probes=config.probes_per_structure) if len(train) else None
        self.cotrain = Batcher(potential, cotrain, config.cotrain_batch_size) if len(cotrain) else None
        self.val = list(val)
        self.cotrain_val = Batcher(potential, cotrain_val, config.cotrain_batch_size) if len(cotrain_val) else None
        self.data = {
            **(data or {}),
            **{name: data_fingerprint(x) for name, x in [("train", train), ("val", val), ("cotrain", cotrain), ("cotrain_val", cotrain_val)]},
        }
        self.timings = {"steps": 0, "load": 0.0, "wait": 0.0, "step": 0.0}  # seconds, summed over steps
        if self.train is None and self.cotrain is None:
            raise ValueError("nothing to train on: no phonon and no upstream examples")
        self.steps_per_epoch = self._batches_per_epoch()
        self.total_steps = config.epochs * self.steps_per_epoch
        self.opt = optimizer(config, self.total_steps)
        self.potential = potential
        self.ema = potential
        self.opt_state = self.opt.init(_params(potential))
        self.rng = np.random.default_rng(config.seed)
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self._batch_sharding = self._replicated = None
        if devices > 1:
            mesh = Mesh(np.array(jax.devices()[:devices]), ("batch",))
            self._batch_sharding = NamedSharding(mesh, P("batch"))
            self._replicated = NamedSharding(mesh, P())
            self._replicate_state()

    def _replicate_state(self) -> None:
        if self._replicated is not None:
            state = (self.potential, self.opt_state, self.ema)
            self.potential, self.opt_state, self.ema = _place(state, self._replicated)

    def _batches_per_epoch(self) -> int:
        if self.train is not None:
            n = sum(math.ceil(len(m) / self.config.batch_size) for m in self.train.groups.values())
            return n * (1 + (self.config.cotrain_ratio if self.cotrain else 0))
        return sum(math.ceil(len(m) / self.config.cotrain_batch_size) for m in self.cotrain.groups.values())

    def _run_batch(self, batch, weights: LossWeights, with_column: bool) -> tuple[float, np.ndarray]:
        if self._batch_sharding is not None:
            batch = _place(batch, self._batch_sharding)
        dtype = batch.positions.dtype
        self.potential, self.opt_state, self.ema, loss, terms = _step(
            self.potential, self.opt_state, self.ema, batch, jnp.asarray(weights, dtype),
            jnp.asarray(self._ema_decay(), dtype), self.opt, with_column, self.hessian_loss, self._replicated,
        )
        self.step += 1
        return float(loss), np.asarray(terms)

    def _ema_decay(self) -> float:
        # ramped so that a short run's EMA is not stuck at the initial weights
        return min(self.config.ema_decay, (1.0 + self.step) / (10.0 + self.step))

    def _cotrain_batches(self):
        while True:
            yield from self.cotrain.epoch(self.rng)

    def _plan(self) -> Iterator[tuple[Batcher, list[int], Columns | None, LossWeights, bool]]:
        """The steps of one epoch: (batcher, indices, columns, weights, is a phonon step).

        All of the epoch's randomness is drawn here, step by step, in one fixed order.
        """
        cfg = self.config
        co = self._cotrain_batches() if self.cotrain is not None else None
        main = self.train if self.train is not None else self.cotrain
        main_weights = cfg.phonon_weights() if self.train is not None else cfg.cotrain_weights()
        for indices in main.epoch(self.rng):
            yield main, indices, main.draw(indices, self.rng), main_weights, self.train is not None
            if co is not None and self.train is not None:
                for _ in range(cfg.cotrain_ratio):
                    yield self.cotrain, next(co), None, cfg.cotrain_weights(), False

    def train_epoch(
        self, on_step: Callable[[dict[str, float]], None] | None = None, max_steps: int | None = None
    ) -> dict[str, float]:
        """One epoch (or its first `max_steps` steps, for benchmarks); returns mean losses and
        the spread of the per-step column loss. `timings` adds up, per step, the seconds spent
        making the batch (on the loader thread), waiting for it, and in the step."""
        losses, column_losses = [], []

        def load(plan):
            t = time.perf_counter()
            batcher, indices, columns, *_ = plan
            return batcher.make(indices, columns=columns), time.perf_counter() - t

        plans = itertools.islice(self._plan(), max_steps)
        with ThreadPoolExecutor(1, thread_name_prefix="pft-batch") as pool:
            plan = next(plans, None)
            pending = pool.submit(load, plan) if plan is not None else None
            while pending is not None:
                t = time.perf_counter()
                batch, load_s = pending.result()
                wait = time.perf_counter() - t
                batcher, _, _, weights, phonon = plan
                plan = next(plans, None)  # drawn here, on this thread, in order
                pending = pool.submit(load, plan) if plan is not None else None  # read while the step runs
                t = time.perf_counter()
                loss, terms = self._run_batch(batch, weights, batcher.has_columns)
                self.timings["steps"] += 1
                self.timings["load"] += load_s
                self.timings["wait"] += wait
                self.timings["step"] += time.perf_counter() - t
                if phonon or self.train is None:
                    losses.append(loss)
                    column_losses.append(terms[3] if phonon else np.nan)  # no column without phonons
                if on_step:
                    main_step = phonon or self.train is None
                    on_step({"loss": loss, "column_loss": float(terms[3]) if main_step else float("nan")})
        column_losses = np.asarray(column_losses)
        return {
            "train_loss": float(np.mean(losses)),
            "column_loss_mean": float(column_losses.mean()),
            "column_loss_std": float(column_losses.std()),
        }

    def local_ema(self) -> Potential:
        """The EMA weights on one device: replicated ones would run every evaluation on all."""
        if self._replicated is None:
            return self.ema
        return jax.tree.map(lambda x: x.addressable_data(0) if eqx.is_array(x) else x, self.ema)

    def validate(self) -> dict[str, float]:
        """Validation metrics of the EMA weights."""
        ema = self.local_ema()
        e_mae, f_mae = efs_mae(ema, self.cotrain_val or [])
        return {"val_hessian_mae": hessian_mae(ema, self.val), "val_energy_mae": e_mae, "val_force_mae": f_mae}

    # -- checkpoints -------------------------------------------------------------------------

    def save_state(self, path: str | Path) -> None:
        """Everything needed to continue exactly: parameters, optimiser state, EMA, RNG, step."""
        buf = io.BytesIO()
        eqx.tree_serialise_leaves(buf, (self.potential, self.opt_state, self.ema))
        header = {
            "format": "pft-train-state",
            "step": self.step,
            "epoch": self.epoch,
            "rng": self.rng.bit_generator.state,
            "samplers": self._sampler_states(),
            "config": dataclasses.asdict(self.config),
            "data": self.data,
            "history": self.history,
        }
        atomic_write(path, json.dumps(header, default=_json_default).encode() + b"\n" + buf.getvalue())

    def load_state(self, path: str | Path) -> None:
        """Continue from `save_state` output; refused, naming what differs, on other data."""
        raw = Path(path).read_bytes()
        line, _, body = raw.partition(b"\n")
        header = json.loads(line)
        if header.get("format") != "pft-train-state":
            raise ValueError(f"{path}: not a training state file")
        if header["config"] != json.loads(json.dumps(dataclasses.asdict(self.config), default=_json_default)):
            raise ValueError(f"{path}: saved with a different training configuration")
        now = json.loads(json.dumps(self.data, default=_json_default))
        differences = _data_differences(header["data"], now) if "data" in header else []  # older states: no record
        if differences:
            raise ValueError(f"{path}: trained on other data than given now: " + "; ".join(differences))
        self.potential, self.opt_state, self.ema = eqx.tree_deserialise_leaves(
            io.BytesIO(body), (self.potential, self.opt_state, self.ema)
        )
        self.step, self.epoch, self.history = header["step"], header["epoch"], header["history"]
        self.rng.bit_generator.state = header["rng"]
        for i, state in header.get("samplers", []):
            self.train.examples[i].sampler.restore(state)
        self._replicate_state()

    def _sampler_states(self) -> list[tuple[int, list[int]]]:
        """(example index, state) of every phonon sampler in the middle of a cycle."""
        if self.train is None:
            return []
        samplers = ((i, ex.sampler) for i, ex in enumerate(self.train.examples))
        return [(i, s.state) for i, s in samplers if s is not None and s.state]

    def save_model(self, path: str | Path, provenance: dict[str, Any] | None = None) -> None:
        """The EMA weights as a model.ckpt."""
        prov = {"training_config": dataclasses.asdict(self.config), "step": self.step, "epoch": self.epoch}
        if self.history:
            prov["last_metrics"] = self.history[-1]
        prov.update(provenance or {})
        save_potential(path, self.ema, prov)


def check_devices(
    devices: int, config: TrainConfig, phonon: bool = True, cotrain: bool = True
) -> None:
    """Refuse a device count the batches cannot be split over, or that JAX does not have.

    `phonon` and `cotrain` say which batch sizes are used (an unused one need not divide).
    """
    if devices < 1:
        raise ValueError(f"devices must be at least 1, got {devices}")
    sizes = [
        ("batch_size", config.batch_size, phonon),
        ("cotrain_batch_size", config.cotrain_batch_size, cotrain),
    ]
    for name, size, used in sizes:
        if used and size % devices:
            raise ValueError(
                f"{name} {size} is not divisible by devices {devices}: "
                "every device takes an equal share of the batch"
            )
    if devices > jax.device_count():
        raise ValueError(
            f"devices {devices} but JAX sees only {jax.device_count()} "
            f"{jax.default_backend()} device(s); on CPU, XLA_FLAGS="
            f"--xla_force_host_platform_device_count={devices} creates {devices} host devices "
            "(set it before JAX starts)"
        )


def data_fingerprint(examples: Sequence[Example] | ExampleSource) -> Any:
    """What identifies training data: each example's id and content hash, or a source's own
    fingerprint (a streamed file's path, size, mtime and frame count: hashing 1.6 million frames
    at every start would cost minutes)."""
    if hasattr(examples, "fingerprint"):
        return examples.fingerprint()
    return {"ids": [ex.id for ex in examples], "digests": [ex.digest() for ex in examples]}


def _data_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two data fingerprints, by name (empty: the same data)."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and "ids" in a and "ids" in b:
            old, new = dict(zip(a["ids"], a["digests"])), dict(zip(b["ids"], b["digests"]))
            parts = []
            if set(old) - set(new):
                parts.append(f"missing {sorted(set(old) - set(new))}")
            if set(new) - set(old):
                parts.append(f"new {sorted(set(new) - set(old))}")
            changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
            if changed:
                parts.append(f"changed {changed}")
            out.append(f"{key}: " + (", ".join(parts) or "same records in another order"))
        elif isinstance(a, list) and isinstance(b, list) and all(isinstance(x, dict) and "path" in x for x in a + b):
            files_a, files_b = {x["path"]: x for x in a}, {x["path"]: x for x in b}
            parts = [f"missing {p}" for p in files_a if p not in files_b]
            parts += [f"new {p}" for p in files_b if p not in files_a]
            parts += [f"changed {p} (size or mtime)" for p in files_a if p in files_b and files_a[p] != files_b[p]]
            out.append(f"{key}: " + (", ".join(parts) or "same files in another order"))
        else:
            out.append(f"{key}: {_short(a)} then, {_short(b)} now")
    return out


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(f"cannot serialise {type(x).__name__}")
