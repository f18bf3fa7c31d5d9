"""PFT step cost on the Si 64-atom supercell (mp-149) with the seed's small model.

Per-step time and memory of three training steps with the same optimiser: a plain force step
(energy/forces/stress loss), the HVP step (one Hessian column per structure, the PFT loss) and
the full-Hessian step (jacfwd over the gradient, the loss the seed starts from). The full-Hessian
step is only compiled, not run, where XLA's own memory estimate exceeds `--max-gb`; its estimate
is printed either way. With --n-probes, the HVP step again with K probes per structure (K HVPs
through one linearisation, `finetune.loss`), and its cost per HVP against K = 1. Ratios are
measured in this one run.

With --curve: the seed's demo at full size. The same start trained by HVP column steps and by
full-Hessian steps (Adam, column loss only); diamond Si has one column class, so every sampled
column's MAE is the full-Hessian MAE and the two curves must agree. Needs about 17 GB.

With --sampling: the validation Hessian MAE after every step for uniform, symmetry-weighted and
cycling column sampling on the built-in EMT records (several seeds), and the steps each takes to
reach the level all of them reach.

    python benchmarks/finetune.py [--steps 5] [--max-gb 8] [--n-probes 1 2 4]
    python benchmarks/finetune.py --curve [--steps 5]
    python benchmarks/finetune.py --sampling [--epochs 8] [--seeds 3]
    python benchmarks/finetune.py --probes [--epochs 8] [--seeds 3] [--records 6] [--draws 16] [--lr 3e-3 1e-2]
                                          [--batch-size 2] [--n-probes 1 4] [--schedule cosine] [--no-full]

With --probes: on distorted EMT alloys (`generate.low_symmetry_materials`, 12 column classes per
supercell), the variance of the per-HVP parameter gradient around the full-Hessian gradient of
the same loss, and the validation Hessian MAE after every step, for the column probe (the seed's
mae loss and the mse one) and the rademacher and symmetry projections (`finetune.probes`), at
each learning rate given; with --n-probes K also column and rademacher with K probes per
structure. The HVPs per structure each kind needs to reach the level all reach are taken at
its best learning rate, so a lower-variance probe may show that it tolerates larger steps.
Beside them (unless --no-full) the zero-variance reference: every class of each structure in
the batch each step (12 HVPs per structure), weighted so that the Hessian term is the batch's
exact full-Hessian loss; its steps to the target show what removing the probe noise alone buys.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# this script's name would shadow the `finetune` package: take its folder off the path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import phonon_eval as pe
from finetune.data import Batcher, phonon_examples
from finetune.loss import LossWeights, batch_loss
from phonon_eval.derivatives import hessian
from phonon_eval.potential import _inputs

_spec = importlib.util.spec_from_file_location("_common", _HERE / "_common.py")
_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_common)
peak_rss_mb, shared_dir = _common.peak_rss_mb, _common.shared_dir

SMALL = dict(cutoff=5.0, hidden_irreps="32x0e + 32x1o + 32x2e", lmax=3, n_layers=3, radial_basis_size=8, radial_mlp_size=64, radial_mlp_layers=2)


def _memory_gb(compiled) -> float:
    m = compiled.compiled.memory_analysis()  # equinox wraps the jax.stages.Compiled
    if m is None:
        return float("nan")
    return (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes) / 1e9


def sampling(epochs: int, seeds: int) -> None:
    """Validation Hessian MAE after every step for uniform, symmetry and cycle sampling on data/emt."""
    from finetune.trainer import TrainConfig, Trainer

    data = pe.Dataset(_HERE.parent / "data" / "emt")
    train = [data[i] for i in data.split("train")]
    val = phonon_examples([data[i] for i in data.split("val")])
    numbers = sorted({int(z) for r in train + [data[i] for i in data.split("val")] for z in r.unitcell.numbers})
    config = pe.NequixConfig(atomic_numbers=tuple(numbers), cutoff=4.5, hidden_irreps="16x0e + 8x1o + 4x2e", lmax=2,
                             n_layers=2, radial_basis_size=8, radial_mlp_size=32, avg_n_neighbors=40.0)
    curves: dict[str, list[list[float]]] = {}
    for kind in ("uniform", "symmetry", "cycle"):
        examples = phonon_examples(train, kind)
        for seed in range(seeds):
            start = pe.Potential(model=pe.Nequix(config, key=jax.random.key(seed)), atomic_numbers=config.atomic_numbers, cutoff=4.5)
            cfg = TrainConfig(epochs=epochs, batch_size=3, learning_rate=3e-3, schedule="constant", ema_decay=0.0,
                              force_weight=0.0, stress_weight=0.0, hessian_weight=1.0, seed=seed)
            trainer = Trainer(start, cfg, examples, val)
            curve = [trainer.validate()["val_hessian_mae"]]
            for _ in range(epochs):
                trainer.train_epoch(on_step=lambda _: curve.append(trainer.validate()["val_hessian_mae"]))
            curves.setdefault(kind, []).append(curve)
    per_epoch = trainer.steps_per_epoch
    mean = {k: np.mean(v, axis=0) for k, v in curves.items()}
    print(f"validation Hessian MAE (eV/Å²) on data/emt val, mean of {seeds} seeds, {per_epoch} steps per epoch")
    print("  step " + " ".join(f"{k:>9s}" for k in mean))
    for step in range(0, epochs * per_epoch + 1, per_epoch):
        print(f"{step:6d} " + " ".join(f"{mean[k][step]:9.4f}" for k in mean))
    # the level that every sampler's mean curve reaches, and the first step at which each does
    target = max(m.min() for m in mean.values())
    reach = {k: int(np.argmax(m <= target)) for k, m in mean.items()}
    print(f"steps to reach {target:.4f}: " + ", ".join(f"{k} {v}" for k, v in reach.items()))
    print(f"steps-to-target symmetry / uniform = {reach['symmetry'] / reach['uniform']:.2f}; "
          f"cycle / uniform = {reach['cycle'] / reach['uniform']:.2f}")


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))])


def probes(epochs: int, seeds: int, n_train: int, draws: int, lrs: Sequence[float] = (3e-3,), batch_size: int = 2,
           n_probes: Sequence[int] = (1,), schedule: str = "constant", full: bool = True) -> None:
    """Gradient variance per HVP and HVPs to a target validation Hessian MAE, per probe kind (and
    K probes per structure), each at its best learning rate, on distorted (low-symmetry) EMT
    alloys made by the project's generator."""
    import tempfile

    from ase.calculators.emt import EMT

    from finetune.probes import every_class
    from finetune.trainer import TrainConfig, Trainer
    from phonon_eval.generate import generate_record, low_symmetry_materials

    folder = Path(tempfile.mkdtemp(prefix="pft-lowsym-"))
    records = [pe.read_record(generate_record(m, EMT(), folder)) for m in low_symmetry_materials(n_train + 2)]
    train_records, val_records = records[:n_train], records[n_train:]
    val = phonon_examples(val_records)
    numbers = sorted({int(z) for r in records for z in r.unitcell.numbers})
    config = pe.NequixConfig(atomic_numbers=tuple(numbers), cutoff=4.5, hidden_irreps="16x0e + 8x1o + 4x2e", lmax=2,
                             n_layers=2, radial_basis_size=8, radial_mlp_size=32, avg_n_neighbors=40.0)

    def start(seed: int) -> pe.Potential:
        return pe.Potential(model=pe.Nequix(config, key=jax.random.key(seed)), atomic_numbers=config.atomic_numbers, cutoff=4.5)

    examples = phonon_examples(train_records)
    print("distorted EMT alloys (column classes of the 32-atom supercell):")
    print("  " + ", ".join(f"{e.id} ({len(e.classes)})" for e in examples) + f"; validation: {', '.join(e.id for e in val)}")

    # 1. variance of the per-HVP gradient around the full-Hessian gradient of the same loss, at
    # the start; the full gradient is exact from the class representatives (equal within a class)
    weights = jnp.asarray(LossWeights(0.0, 0.0, 0.0, 1.0))
    grad = {loss: eqx.filter_jit(eqx.filter_grad(lambda p, b, loss=loss: batch_loss(p, b, weights, True, loss)[0]))
            for loss in ("mae", "mse")}
    potential, rng = start(0), np.random.default_rng(0)
    kinds = [("column", "mae"), ("column", "mse"), ("rademacher", "mse"), ("symmetry", "mse")]
    variance: dict[tuple[str, str], list[float]] = {k: [] for k in kinds}
    for ex in examples:
        batcher = Batcher(potential, [ex], 1)
        n3 = 3 * len(ex.atoms)
        full = {loss: sum(m / n3 * _flat(grad[loss](potential, batcher.make([0], columns=[(a, d)])))
                          for a, d, m in zip(ex.classes.atoms, ex.classes.directions, ex.classes.multiplicity))
                for loss in ("mae", "mse")}
        for probe, loss in kinds:
            draw = Batcher(potential, [ex], 1, probe=probe)
            gs = [_flat(grad[loss](potential, draw.make([0], rng))) for _ in range(draws)]
            variance[(probe, loss)].append(np.mean([np.sum((g - full[loss]) ** 2) for g in gs]) / np.sum(full[loss] ** 2))
    print(f"gradient variance per HVP / |full-Hessian gradient|^2 (start of training, {draws} draws per structure, mean over structures):")
    for (probe, loss), v in variance.items():
        print(f"  {probe:10s} {loss}: {np.mean(v):8.3f}   (structures: {', '.join(f'{x:.2f}' for x in v)})")

    # 2. validation Hessian MAE after every step, for each kind at each learning rate; K probes
    # per structure and step cost K HVPs, so curves are compared by HVPs per structure
    kinds = [(probe, loss, 1) for probe, loss in kinds] + [(p, l, k) for k in n_probes if k > 1
                                                           for p, l in (("column", "mae"), ("rademacher", "mse"))]
    # the zero-variance reference: every class of each structure in the batch, weighted by its
    # multiplicity, so the step's Hessian term is the exact full-Hessian loss of the batch (mae:
    # the validation metric's, mse: the projections' expectation). An unbiased probe of the same
    # loss differs from it by noise only, so where it is not much faster, the noise was not the limit.
    n_classes = max(len(e.classes) for e in examples)
    if full:
        kinds += [("full", "mae", n_classes), ("full", "mse", n_classes)]

    def all_classes(indices: Sequence[int], rng: np.random.Generator) -> list:
        return [every_class(examples[i].classes, len(examples[i].atoms), n_classes) for i in indices]

    curves: dict[tuple[str, float], list[np.ndarray]] = {}
    for lr in lrs:
        for probe, loss, k in kinds:
            for seed in range(seeds):
                cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, schedule=schedule, ema_decay=0.0,
                                  force_weight=0.0, stress_weight=0.0, hessian_weight=1.0, seed=seed,
                                  probe="column" if probe == "full" else probe, hessian_loss=loss, probes_per_structure=k)
                trainer = Trainer(start(seed), cfg, examples, val)
                if probe == "full":
                    trainer.train.draw = all_classes
                curve = [trainer.validate()["val_hessian_mae"]]
                for _ in range(epochs):
                    trainer.train_epoch(on_step=lambda _: curve.append(trainer.validate()["val_hessian_mae"]))
                name = f"{probe}/{loss}" + (f"/K={k}" if k > 1 and probe != "full" else "")
                curves.setdefault((name, lr), []).append(np.array(curve))
                per_epoch = trainer.steps_per_epoch
                del trainer
                jax.clear_caches()  # every Trainer compiles its own step: keep their programs from piling up
        at = {name: np.mean(v, axis=0) for (name, r), v in curves.items() if r == lr}
        print(f"validation Hessian MAE (eV/Å²), mean of {seeds} seeds, {per_epoch} steps per epoch, Adam {lr:g} ({schedule}), batch {batch_size}:")
        print("  step " + " ".join(f"{name:>18s}" for name in at))
        for step in range(0, epochs * per_epoch + 1, per_epoch):
            print(f"{step:6d} " + " ".join(f"{m[step]:18.4f}" for m in at.values()), flush=True)
    # HVPs per structure and step; the full reference is counted in steps (it takes one HVP per class)
    hvps = {name: int(name.split("K=")[1]) if "K=" in name else 1 for name, _ in curves}
    mean = {key: np.mean(v, axis=0) for key, v in curves.items()}
    # the common target: the level every probe reaches at its best learning rate
    names = list(hvps)
    target = max(min(m.min() for (n, _), m in mean.items() if n == name) for name in names if not name.startswith("full"))

    def reached(curve: np.ndarray, name: str) -> int | None:
        return int(np.argmax(curve <= target)) * hvps[name] if (curve <= target).any() else None

    def stays(curve: np.ndarray, name: str) -> int | None:
        # from which step on the curve stays at or under the target (a dip it leaves again is not progress)
        above = np.nonzero(curve > target)[0]
        first = int(above[-1]) + 1 if len(above) else 0
        return first * hvps[name] if first < len(curve) else None

    reach = {}
    for name in names:
        runs = {lr: reached(mean[(name, lr)], name) for lr in lrs}
        lr = min((r for r in runs if runs[r] is not None), key=runs.get, default=lrs[0])
        reach[name] = (runs[lr], lr, [reached(c, name) for c in curves[(name, lr)]])
    print(f"HVPs per structure to reach {target:.4f} (mean curve at the kind's best learning rate; per seed):")
    for name, (n, lr, per_seed) in reach.items():
        print(f"  {name:18s} {'-' if n is None else n:>4} at {lr:g}   {per_seed}; stays under from {[stays(c, name) for c in curves[(name, lr)]]}")

    def ratio(name: str) -> str:
        n = reach[name][0]
        return f"{n / max(reach['column/mae'][0], 1):.2f}" if n is not None else "not reached"

    best = min((n for n in reach if not n.startswith(("column", "full"))), key=lambda n: reach[n][0])
    print(f"best projection {best}: HVPs-to-target / column (mae, the seed's) = {ratio(best)}")
    for name in (n for n in reach if n.startswith("full")):
        print(f"zero-variance reference {name} ({n_classes} HVPs per structure and step): steps-to-target / column (mae) = {ratio(name)}")


def _si64():
    """The mp-149 record's 64-atom supercell example and a random small Nequix for it."""
    record = pe.read_record(shared_dir() / "data" / "mdr" / "mp-149.yaml")
    config = pe.NequixConfig(atomic_numbers=(14,), avg_n_neighbors=20.0, **SMALL)
    potential = pe.Potential(model=pe.Nequix(config, key=jax.random.key(0)), atomic_numbers=(14,), cutoff=5.0)
    return phonon_examples([record], "symmetry")[0], potential


def _full_hessian_mae(ex, potential):
    """The MAE over the real atoms' full Hessian (jacfwd over the gradient), as a loss of the weights."""
    graph, r, cell = _inputs(potential, ex.atoms, None)
    n, pad = len(ex.atoms), graph.n_nodes - len(ex.atoms)
    ref = jnp.asarray(np.pad(ex.force_constants.full(), ((0, pad), (0, pad), (0, 0), (0, 0))))
    real = jnp.asarray(np.arange(graph.n_nodes) < n)
    pair = (real[:, None] & real[None, :])[:, :, None, None]
    return lambda p: jnp.sum(jnp.where(pair, jnp.abs(hessian(p.energy_fn(graph), r, cell) - ref), 0.0)) / (9 * n * n)


def curve(steps: int) -> None:
    """HVP column training and full-Hessian training from one start, side by side."""
    from finetune.trainer import TrainConfig, Trainer

    ex, potential = _si64()
    cfg = TrainConfig(epochs=steps, batch_size=1, learning_rate=3e-3, schedule="constant", optimizer="adam",
                      force_weight=0.0, stress_weight=0.0, hessian_weight=1.0, ema_decay=0.0)
    trainer = Trainer(potential, cfg, [ex])
    opt = optax.adam(3e-3)
    full_mae = _full_hessian_mae(ex, potential)

    @eqx.filter_jit
    def full_step(p, s):
        loss, grads = eqx.filter_value_and_grad(full_mae)(p)
        updates, s = opt.update(grads, s, eqx.filter(p, eqx.is_inexact_array))
        return eqx.apply_updates(p, updates), s, loss

    p, s = potential, opt.init(eqx.filter(potential, eqx.is_inexact_array))
    print(f"Si {len(ex.atoms)} atoms, one column class; column MAE (eV/Å²) before each Adam step (lr 3e-3)")
    print(" step  HVP column    full Hessian   HVP s   full s")
    hvp, full = [], []
    for k in range(steps):
        t = time.perf_counter()
        hvp.append(trainer.train_epoch()["column_loss_mean"])
        t_hvp = time.perf_counter() - t
        t = time.perf_counter()
        p, s, loss = full_step(p, s)
        full.append(float(loss))
        t_full = time.perf_counter() - t
        print(f"{k:5d}  {hvp[-1]:10.6f}  {full[-1]:12.6f}  {t_hvp:6.1f}  {t_full:7.1f}", flush=True)
    rel = np.max(np.abs(np.subtract(hvp, full)) / np.abs(full))
    print(f"largest relative difference between the curves: {rel:.1e} (the first step includes compilation)")
    print(f"peak memory (RSS): {peak_rss_mb():.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--max-gb", type=float, default=8.0, help="run the full-Hessian step only below this estimate")
    parser.add_argument("--n-probes", type=int, nargs="+", default=[1], metavar="K",
                        help="HVP steps with K probes per structure (the first K is the reference)")
    parser.add_argument("--curve", action="store_true", help="HVP vs full-Hessian loss curves on Si 64 instead")
    parser.add_argument("--sampling", action="store_true", help="compare column samplers on data/emt instead")
    parser.add_argument("--epochs", type=int, default=8, help="with --sampling")
    parser.add_argument("--seeds", type=int, default=3, help="with --sampling")
    parser.add_argument("--probes", action="store_true", help="compare Hessian probes on distorted EMT alloys instead")
    parser.add_argument("--records", type=int, default=6, help="with --probes: training records")
    parser.add_argument("--draws", type=int, default=16, help="with --probes: probe draws per structure for the variance")
    parser.add_argument("--lr", type=float, nargs="+", default=[3e-3],
                        help="with --probes: Adam's learning rates (each kind is compared at its best)")
    parser.add_argument("--batch-size", type=int, default=2, help="with --probes: structures per step")
    parser.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                        help="with --probes: the learning-rate schedule (cosine decays to 0 over the run)")
    parser.add_argument("--no-full", action="store_true",
                        help="with --probes: leave out the zero-variance reference (every class each step)")
    args = parser.parse_args()
    if args.probes:
        probes(args.epochs, args.seeds, args.records, args.draws, args.lr, args.batch_size, args.n_probes, args.schedule,
               not args.no_full)
        return
    if args.sampling:
        sampling(args.epochs, args.seeds)
        return
    if args.curve:
        curve(args.steps)
        return
    ex, potential = _si64()
    n_params = sum(x.size for x in jax.tree.leaves(eqx.filter(potential, eqx.is_inexact_array)))
    batch = Batcher(potential, [ex], 1).make([0], np.random.default_rng(0))
    opt = optax.adam(3e-3)
    params = eqx.filter(potential, eqx.is_inexact_array)
    state = opt.init(params)

    def step_of(loss_fn):
        @eqx.filter_jit
        def step(p, s):
            loss, grads = eqx.filter_value_and_grad(loss_fn)(p)
            updates, s = opt.update(grads, s, eqx.filter(p, eqx.is_inexact_array))
            return eqx.apply_updates(p, updates), s, loss

        return step

    force_w = jnp.asarray(LossWeights(1.0, 20.0, 5.0, 0.0))
    pft_w = jnp.asarray(LossWeights(0.0, 20.0, 5.0, 100.0))
    steps = {"force step": step_of(lambda p: batch_loss(p, batch, force_w, False)[0]),
             "HVP step": step_of(lambda p: batch_loss(p, batch, pft_w, True)[0])}
    for k in args.n_probes:
        if k > 1:
            many = Batcher(potential, [ex], 1, probes=k).make([0], np.random.default_rng(0))
            steps[f"HVP step, K={k}"] = step_of(lambda p, b=many: batch_loss(p, b, pft_w, True)[0])
    steps["full-Hessian step"] = step_of(_full_hessian_mae(ex, potential))

    print(f"Si {len(ex.atoms)} atoms, small Nequix ({n_params:,} parameters), {args.steps} steps each")
    times = {}
    for name, step in steps.items():
        t = time.perf_counter()
        compiled = step.lower(potential, state).compile() if hasattr(step, "lower") else None
        estimate = _memory_gb(compiled) if compiled is not None else float("nan")
        compile_s = time.perf_counter() - t
        if name == "full-Hessian step" and estimate > args.max_gb:
            print(f"{name:18s}: XLA memory estimate {estimate:8.2f} GB > --max-gb, not run (compile {compile_s:.1f} s)")
            continue
        p, s, _ = step(potential, state)  # warm-up
        jax.block_until_ready(p)
        t = time.perf_counter()
        for _ in range(args.steps):
            p, s, loss = step(p, s)
        jax.block_until_ready(loss)
        times[name] = (time.perf_counter() - t) / args.steps
        print(f"{name:18s}: {times[name] * 1e3:9.1f} ms/step   XLA memory estimate {estimate:8.3f} GB")
    print(f"HVP step / force step = {times['HVP step'] / times['force step']:.2f}")
    for k in args.n_probes:
        if k > 1:
            step_k = times[f"HVP step, K={k}"]
            print(f"K={k} probes: step / K=1 step = {step_k / times['HVP step']:.2f}, "
                  f"time per HVP / K=1 = {step_k / k / times['HVP step']:.2f}")
    if "full-Hessian step" in times:
        print(f"full-Hessian step / HVP step = {times['full-Hessian step'] / times['HVP step']:.1f}")
    print(f"peak memory (RSS): {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
