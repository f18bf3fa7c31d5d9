"""`pft-finetune`: phonon fine-tuning with the Hessian-column loss (one HVP per structure per step)."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import EXIT_HELP_TRAINING, EXIT_USAGE, CompileCacheOption, VersionOption, console, err_console, fail, interrupted, reported, use_compile_cache

app = typer.Typer(
    name="pft-finetune",
    help="Fine-tune a potential on DFT force constants (PFT): Hessian columns from one "
    "Hessian-vector product, energy/force/stress terms, co-training on upstream data. PFT needs "
    "a JAX energy function: the built-in Nequix (.ckpt, .nqx), or another JAX model given the "
    "EdgeModel form and wrapped in phonon_eval.Potential (README). ASE calculators (PyTorch "
    "models) can be evaluated with pft-eval --calculator, not fine-tuned here.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
)


@app.command(epilog=EXIT_HELP_TRAINING)
def finetune(
    out: Annotated[Path, typer.Option(help="Output model.ckpt (EMA weights), written atomically each epoch.")],
    model: Annotated[Optional[Path], typer.Option(help="Starting model (.ckpt or .nqx).")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Train from scratch: TOML with the Nequix architecture (instead of --model).")] = None,
    dataset: Annotated[Optional[Path], typer.Option(help="Phonon dataset folder (records + split.json).")] = None,
    split: Annotated[str, typer.Option(help="Split of --dataset to train on.")] = "train",
    val_split: Annotated[Optional[str], typer.Option(help="Split of --dataset to validate on (Hessian MAE).")] = "val",
    cotrain: Annotated[Optional[list[Path]], typer.Option(help=(
        "Upstream energy/force/stress frames for co-training: ASE .db or extxyz, streamed from disk "
        "(compressed extxyz is read whole). Repeat for several files, or give a quoted glob "
        "('shards/*.extxyz'). An index of each file is cached beside it as <file>.pft-index.npz."))] = None,
    cotrain_val: Annotated[Optional[list[Path]], typer.Option(help="Held-out upstream frames (energy/force MAE); as --cotrain.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file of training settings; command-line options override it.")] = None,
    symmetry_sampling: Annotated[bool, typer.Option("--symmetry-sampling", help="Draw only symmetry-independent columns, weighted by multiplicity.")] = False,
    cycle_columns: Annotated[bool, typer.Option("--cycle-columns", help="Visit every independent column of every structure once per epoch.")] = False,
    probe: Annotated[Optional[str], typer.Option(help=(
        "What each structure's one HVP is taken along: column (a Hessian column, drawn as the options above say; "
        "default), rademacher (random signs on all 3N coordinates) or symmetry (random signs over the symmetry "
        "classes of columns, weighted by the square root of their multiplicity). The projections estimate the "
        "squared Hessian error without bias; see the README."), show_default=False)] = None,
    hessian_loss: Annotated[Optional[str], typer.Option(help="mae (the seed's, columns only) or mse (default for the projections).", show_default=False)] = None,
    probes_per_structure: Annotated[Optional[int], typer.Option("--n-probes", help=(
        "K: HVPs per phonon structure per step, along K independently drawn probes of the --probe kind, "
        "pushed through one linearisation of the forces (the forward and backward pass are shared); the "
        "Hessian term is their mean (default 1)."), show_default=False)] = None,
    val_every: Annotated[Optional[int], typer.Option(help=(
        "Every N epochs (and before training), evaluate ω_max, S, F and C_V of the validation records with the "
        "EMA weights (analytic force constants at the records' geometry) against their DFT ones; MAEs at 300 K "
        "go to the metrics file and the log. Default 0: never."), show_default=False)] = None,
    select_by: Annotated[Optional[str], typer.Option(help=(
        "Keep the checkpoint that is best by this validation metric as <out stem>.best<suffix> beside the last one: "
        "val_hessian_mae, val_force_mae, val_energy_mae, val_omega_max_mae, val_entropy_mae, val_free_energy_mae, "
        "val_heat_capacity_mae, or val_property_ratio (the worst ratio of a property MAE to the starting model's: "
        "the best checkpoint that makes no property worse, the starting model if none does)."), show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs (default 10).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Phonon structures per step (default 4).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Peak learning rate (default 1e-4).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default 0).")] = None,
    devices: Annotated[int, typer.Option(help=(
        "Data parallelism: split every batch over the first N devices (batch sizes must be "
        "multiples of N; results do not depend on N). On CPU, "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N gives N host devices."))] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue exactly from <out>.state (refused if there is none).")] = False,
    metrics: Annotated[Optional[Path], typer.Option(help="CSV of per-epoch metrics (default <out>.csv).")] = None,
    example_cache: Annotated[Optional[Path], typer.Option(help=(
        "Folder where each record's phonon example (supercell, symmetry classes, compact force constants) "
        "is kept between runs, named by the record file's content hash: 10,000 records load in seconds "
        "instead of minutes. Default $PFT_CACHE_DIR/examples, else ~/.cache/pft/examples; 'off' makes "
        "every example afresh."), show_default=False)] = None,
    compile_cache: CompileCacheOption = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress on stderr.")] = True,
    version: VersionOption = False,
) -> None:
    """Fine-tune a potential with PFT; every other hyperparameter lives in --config (see README)."""
    from finetune.array_cache import default_cache_dir
    from finetune.run import ResumeError, RunSpec, run, state_path
    from finetune.trainer import TrainConfig

    if (model is None) == (init is None):
        fail("give exactly one of --model (fine-tune) and --init (train from scratch)", EXIT_USAGE)
    if dataset is None and not cotrain:
        fail("nothing to train on: give --dataset and/or --cotrain", EXIT_USAGE)
    if symmetry_sampling and cycle_columns:
        fail("--symmetry-sampling and --cycle-columns exclude each other", EXIT_USAGE)
    settings: dict = {}
    if config is not None:
        with reported(OSError, tomllib.TOMLDecodeError):
            settings = tomllib.loads(config.read_text())
    unknown = set(settings) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        fail(f"{config}: unknown settings {', '.join(sorted(unknown))}", EXIT_USAGE)
    overrides = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    given = {"probe": probe, "hessian_loss": hessian_loss, "probes_per_structure": probes_per_structure, "val_every": val_every, "select_by": select_by}
    settings.update({k: v for k, v in given.items() if v is not None})
    if symmetry_sampling:
        settings["sampler"] = "symmetry"
    elif cycle_columns:
        settings["sampler"] = "cycle"
    try:
        train_config = TrainConfig(**settings)
    except (TypeError, ValueError) as err:
        fail(f"bad training settings: {err}", EXIT_USAGE)
    use_compile_cache(compile_cache)
    spec = RunSpec(
        out=out, model=model, init=init, dataset=dataset, split=split, val_split=val_split,
        cotrain=cotrain or None, cotrain_val=cotrain_val or None, resume=resume,
        metrics=metrics or out.with_suffix(".csv"), devices=devices,
        example_cache=None if str(example_cache) == "off" else example_cache or default_cache_dir() / "examples",
    )
    try:
        summary = run(spec, train_config, progress=progress, console=err_console)
    except ResumeError as err:
        fail(str(err), EXIT_USAGE)
    except (ValueError, OSError, KeyError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        state = state_path(out)
        if state.is_file():
            interrupted(f"the last finished epoch is saved in {out} and {state}", "run the same command again with --resume to continue")
        interrupted("no epoch had finished, nothing was saved", "run the command again")
    console.print(summary)


def main() -> None:
    app()
