"""Per-material fan-out: in this process, or on a dask.distributed cluster, with the same results.

The evaluators run one pure function per material, `evaluate(model, material) -> row`. This
module runs it over many materials and hands each row, as it finishes, to a `save` function
(`phonon_eval.store` writes it to disk at once), so a crash loses only the materials in flight
and a resumed run skips what was saved, whoever computed it.

On Dask the model (a force provider) reaches each worker once (a task result that Dask copies
to the workers and recomputes if all holders die), so whatever it builds there, compiled JAX
functions or an ASE calculator made from its spec, stays warm across materials. This module
knows nothing of phonons or of models: a row is a dict with `material`, `status` and `error`.
A material that raises becomes a failed row with its reason; a worker that dies (out of memory,
killed) is replaced by the nanny and its material is retried once (`allowed-failures` 1 on a
local cluster), then recorded as failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["Cluster", "Evaluate", "failed_row", "run_materials", "worker_environment"]

Row = dict[str, Any]
Evaluate = Callable[[Any, str], Row]
"""(model, material id) -> result row; must be picklable (a module-level function or a
functools.partial of one) to run on Dask workers."""


def failed_row(material: str, error: str) -> Row:
    """A row that records a failure with its reason."""
    return {"material": material, "status": "failed", "error": error}


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where materials run: in process (the default), a local Dask cluster, or an existing one.

    Attributes:
        workers: process workers of a `LocalCluster` (1 and no scheduler: in process).
        scheduler: address of a running Dask scheduler, e.g. "tcp://10.0.0.1:8786".
        scheduler_file: JSON file a scheduler wrote (`dask scheduler --scheduler-file`, or
            dask-jobqueue on Slurm/PBS).
    """

    workers: int = 1
    scheduler: str | None = None
    scheduler_file: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.scheduler is not None and self.scheduler_file is not None:
            raise ValueError("give a scheduler address or a scheduler file, not both")
        if (self.scheduler is not None or self.scheduler_file is not None) and self.workers != 1:
            raise ValueError("--workers starts a local cluster; an existing scheduler brings its own workers")

    @property
    def in_process(self) -> bool:
        return self.workers == 1 and self.scheduler is None and self.scheduler_file is None

    def describe(self) -> str:
        if self.scheduler is not None:
            return f"dask scheduler {self.scheduler}"
        if self.scheduler_file is not None:
            return f"dask scheduler from {self.scheduler_file}"
        return "in process" if self.in_process else f"local dask cluster, {self.workers} workers"


def worker_environment(workers: int, cores: int | None = None, compile_cache: str | os.PathLike | None = None) -> dict[str, str]:
    """Settings so that `workers` processes share a host without oversubscribing it.

    Each worker gets cores // workers BLAS/OpenMP threads (PyTorch takes its thread count from
    OMP_NUM_THREADS too); with one core each, XLA's CPU thread pool is switched off as well (it
    would otherwise start a thread per core in every worker). On a GPU no worker preallocates
    75 % of its device (JAX's default), since each has a device of its own (`devices.OneDevicePerWorker`).
    With `compile_cache`, JAX's persistent compilation cache is that folder for every worker, and
    every program goes in it: a shape one worker has compiled, the others load instead of
    compiling it again.
    """
    cores = cores or os.cpu_count() or 1
    threads = max(1, cores // workers)
    env = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        flags = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    if flags:
        env["XLA_FLAGS"] = flags
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if compile_cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(compile_cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


# the models this worker process evaluates with, by their Dask keys (the last runs' only)
_KEPT: dict[str, Any] = {}
_KEEP = 2


def _kept(key: str, model: Any) -> Any:
    """The first copy of the model `key` this process saw, else `model`, now kept.

    Dask's memory manager keeps one replica of the model task's result and may drop a worker's
    copy between two of its materials, sending it again for the next: a newly unpickled model
    is equal but not the same object, and JAX traces every compiled function again for it
    wherever a static part compares by identity (a user's energy function sent by value, the
    compiled functions a provider holds; e3nn's layers did before `nequix` made them compare by
    value): 0.5 to 1.6 s per function and material for the demo potential.
    """
    if key not in _KEPT:
        while len(_KEPT) >= _KEEP:
            _KEPT.pop(next(iter(_KEPT)))
        _KEPT[key] = model
    return _KEPT[key]


def _evaluate_one(evaluate: Evaluate, model: Any, material: str, model_key: str | None = None) -> Row:
    try:
        if model_key is not None:
            model = _kept(model_key, model)
        return evaluate(model, material)
    except Exception as err:  # one bad material must not stop the others
        return failed_row(material, f"{type(err).__name__}: {err}")


def _same(model: Any) -> Any:
    return model


def _receive(model_key: str, evaluate: Evaluate, model: Any) -> None:
    """Nothing returned: the model is kept as this process's copy of `model_key`, and with it and
    `evaluate` unpickled, their libraries are imported."""
    _kept(model_key, model)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """These environment variables in this process (and the processes it starts) for a while."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _client(cluster: Cluster) -> Iterator[Any]:
    import dask
    from distributed import Client, LocalCluster

    if cluster.scheduler is not None:
        with Client(cluster.scheduler) as client:
            yield client
        return
    if cluster.scheduler_file is not None:
        with Client(scheduler_file=str(cluster.scheduler_file)) as client:
            yield client
        return
    # the workers share compiled programs through a cache the run owns (or the user's own)
    own = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="pft-jax-cache-") as cache:
        env = worker_environment(cluster.workers, compile_cache=own or cache)
        # the environment is in place when a worker is spawned, not only once it runs (Dask's
        # `env`), because a worker first imports the parent's __main__: a script that imports numpy
        # or JAX at its top would read OMP_NUM_THREADS or JAX_COMPILATION_CACHE_DIR too early.
        # Dask's nanny sets its pre-spawn variables in this process; they are put back afterwards
        spawn = {name: str(value) for name, value in {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **env}.items()}
        settings = {
            # a material whose worker dies is retried once, then KilledWorker: recorded as failed
            "distributed.scheduler.allowed-failures": 1,
            "distributed.nanny.pre-spawn-environ": spawn,
            # Dask's sampling profiler takes the GIL every 10 ms to walk the running task's stack:
            # 4-6 % of a small material's time (relaxation and phonopy are Python-heavy)
            "distributed.worker.profile.enabled": False,
        }
        with dask.config.set(settings), _environment(spawn):
            local = LocalCluster(n_workers=cluster.workers, threads_per_worker=1, processes=True, dashboard_address=None, env=env)
            with local, Client(local) as client:
                from phonon_eval.devices import OneDevicePerWorker, gpu_ids

                devices = gpu_ids()
                if devices:
                    client.register_plugin(OneDevicePerWorker(devices))
                yield client


def run_materials(
    name: str,
    ids: Sequence[str],
    evaluate: Evaluate,
    model: Any,
    save: Callable[[Row], None],
    *,
    done: Collection[str] = (),
    cluster: Cluster = Cluster(),
    progress: bool = True,
    console: Console | None = None,
) -> int:
    """Evaluate every material of `ids` not in `done`, handing each row to `save` as it finishes.

    Args:
        name: what is computed, for the progress bar ("phonons", "kappa").
        ids: material ids.
        evaluate: the per-material function.
        model: its first argument (sent to each worker once).
        save: stores one row (atomically); rows are not kept here, so memory stays flat.
        done: materials already evaluated (resume).
        cluster: where to run.
        progress: show a rich progress bar on `console`.

    Returns:
        How many materials were evaluated.
    """
    finished = set(done) & set(ids)
    todo = [m for m in ids if m not in finished]
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task(name, total=len(ids), completed=len(finished))

        def tick(material: str) -> None:
            bar.update(task, description=f"{name}: {material}", advance=1)

        if cluster.in_process:
            for material in todo:
                bar.update(task, description=f"{name}: {material}")
                save(_evaluate_one(evaluate, model, material))
                bar.advance(task)
        elif todo:
            _run_on_dask(name, todo, evaluate, model, cluster, save, tick)
    return len(todo)


def _run_on_dask(
    name: str,
    todo: list[str],
    evaluate: Evaluate,
    model: Any,
    cluster: Cluster,
    save: Callable[[Row], None],
    tick: Callable[[str], None],
) -> None:
    from distributed import as_completed

    with _client(cluster) as client:
        # every worker unpickles the model and the evaluator at once, importing their libraries
        # (about 4 s for JAX and equinox); otherwise a second worker would start that only after
        # the first had computed the model task below and sent it over. The copy each worker
        # unpickles here is the one it keeps and evaluates with
        model_key = f"model-{uuid.uuid4().hex}"
        try:
            client.run(_receive, model_key, evaluate, model)
        except Exception:  # noqa: BLE001 - a worker that cannot unpickle them fails each material, named
            pass
        # a task, not scattered data: if every worker holding it dies, Dask recomputes it
        remote = client.submit(_same, model, key=model_key, pure=False)
        waiting = iter(todo)
        running: dict[Any, str] = {}
        finished = as_completed()

        def fill() -> None:
            # no more materials in flight than worker threads: a worker that dies then takes
            # only its own material with it, and memory stays bounded on large clusters
            slots = max(1, sum(client.nthreads().values()))
            while len(running) < slots:
                material = next(waiting, None)
                if material is None:
                    return
                future = client.submit(_evaluate_one, evaluate, remote, material, model_key, key=f"{name}-{material}-{os.getpid()}", pure=False)
                running[future] = material
                finished.add(future)

        fill()
        for future in finished:
            material = running.pop(future)
            # the freed worker gets its next material before this one's row is fetched and
            # saved here (a netCDF file each), not after: it would wait for both
            fill()
            try:
                row = future.result()
            except Exception as err:  # KilledWorker after the retry, or a lost connection
                row = failed_row(material, f"{type(err).__name__}: {err}")
            save(row)
            tick(material)
