"""Evaluation fan-out on dask.distributed: the same results as in process, and dead workers recorded.

Workers sharing two cores run XLA single-threaded; XLA's multi-threaded CPU kernels sum in
another order, so the bitwise reference is an in-process run with the same thread setting
(a subprocess, since XLA reads its flags once). The default multi-threaded in-process run agrees
to float32 rounding.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys

import cloudpickle
import pytest
import xarray as xr
from typer.testing import CliRunner

import phonon_eval as pe
from cli.eval import BUILTIN_DATASET, app
from phonon_eval.datasets import Dataset
from phonon_eval.fanout import Cluster, worker_environment
from phonon_eval.phonons import PhononSettings
from phonon_eval.results import _phonon_row, rows_from_dataset, run_phonons, to_dataset, write_atomic
from phonon_eval.runner import run_to_file
from phonon_eval.store import ResultsStore

runner = CliRunner()
FAST = ["--no-relax", "--mesh", "4", "--temperatures", "0,300", "--band-points", "5", "--no-progress"]
SETTINGS = PhononSettings(relax=False, mesh=(4, 4, 4), temperatures=(0.0, 300.0), band_points=5)
IDS = ["Cu-fcc", "Pt-fcc", "Cu3Au-L12", "CuAu-L10"]  # Pt fails: the tiny model does not know it

# the workers cannot import this test module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def without_timing(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.drop_vars([v for v in ds.data_vars if str(v).startswith("time_")])
    ds.attrs.pop("history", None)
    return ds


@pytest.fixture(scope="module")
def serial(tmp_path_factory, tiny_ckpt):
    """The in-process run, with the thread settings a worker on one core gets."""
    out = tmp_path_factory.mktemp("serial") / "serial.nc"
    env = {**os.environ, **worker_environment(2, cores=2)}
    argv = ["phonons", str(tiny_ckpt), "--split", "test", "--out", str(out), *FAST]
    done = subprocess.run([sys.executable, "-c", "from cli.eval import main; main()", *argv], env=env, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr  # written, Pt-fcc failed (the tiny model has no Pt)
    return xr.load_dataset(out)


def test_two_workers_give_identical_results(serial, tiny_ckpt, tmp_path):
    out = tmp_path / "workers.nc"
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--split", "test", "--out", str(out), "--workers", "2", *FAST])
    assert res.exit_code == 3, res.output
    assert "local dask cluster, 2 workers" in res.output
    parallel = xr.load_dataset(out)
    assert list(parallel["status"].values) == ["ok", "failed", "ok", "ok"]
    xr.testing.assert_identical(without_timing(parallel), without_timing(serial))

    # this process runs XLA multi-threaded: the same numbers up to float32 rounding
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--split", "test", "--out", str(tmp_path / "here.nc"), *FAST])
    assert res.exit_code == 3, res.output
    here = without_timing(xr.load_dataset(tmp_path / "here.nc"))
    xr.testing.assert_allclose(here, without_timing(parallel), rtol=1e-4, atol=1e-3)


def kill_on(victim: str, inner, potential, material: str):
    """A material that kills the process evaluating it, as an out-of-memory kill would."""
    if material == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return inner(potential, material)


def test_a_killed_worker_is_recorded_and_the_others_finish(serial, tiny_ckpt, tmp_path):
    out = tmp_path / "killed.nc"
    potential = pe.load_potential(tiny_ckpt)
    evaluate = functools.partial(kill_on, "Cu3Au-L12", functools.partial(_phonon_row, Dataset(BUILTIN_DATASET), SETTINGS))
    run_to_file("phonons", IDS, evaluate, pe.as_provider(potential), SETTINGS, out, to_dataset, cluster=Cluster(workers=2), progress=False)
    ds = xr.load_dataset(out)
    assert list(ds["material"].values) == IDS
    killed = ds.sel(material="Cu3Au-L12")
    assert str(killed["status"].values) == "failed" and "KilledWorker" in str(killed["error"].values)
    others = {"Cu-fcc", "Pt-fcc", "CuAu-L10"}

    def subset(ds):  # the ragged band and DOS arrays too, so rebuilt from the rows
        rows = [r for r in rows_from_dataset(ds) if r["material"] in others]
        return without_timing(to_dataset(rows, SETTINGS.temperatures, dict(serial.attrs)))

    xr.testing.assert_identical(subset(ds), subset(serial))


def test_resume_works_whoever_computed_the_rows(serial, tiny_ckpt, tmp_path, monkeypatch):
    """A file begun in process is finished by workers: only the missing materials run, and the
    file is the one-go run's."""
    out = tmp_path / "r.nc"
    first = [r for r in rows_from_dataset(serial) if r["material"] in ("Cu-fcc", "CuAu-L10")]
    write_atomic(to_dataset(first, SETTINGS.temperatures, dict(serial.attrs)), out)
    added = []
    real = ResultsStore.add
    monkeypatch.setattr(ResultsStore, "add", lambda self, ds: (added.append(str(ds["material"].values[0])), real(self, ds)))
    run_phonons(
        tiny_ckpt, Dataset(BUILTIN_DATASET), IDS, SETTINGS, out, resume=True, cluster=Cluster(workers=2), progress=False,
        attrs={k: serial.attrs[k] for k in ("dataset", "split")},
    )
    assert sorted(added) == ["Cu3Au-L12", "Pt-fcc"]  # two new materials
    xr.testing.assert_identical(without_timing(xr.load_dataset(out)), without_timing(serial))


def test_cluster_settings_are_checked():
    assert Cluster().in_process and not Cluster(workers=2).in_process
    with pytest.raises(ValueError, match="at least 1"):
        Cluster(workers=0)
    with pytest.raises(ValueError, match="not both"):
        Cluster(scheduler="tcp://h:8786", scheduler_file="s.json")
    with pytest.raises(ValueError, match="brings its own workers"):
        Cluster(workers=2, scheduler="tcp://h:8786")


def test_worker_threads_share_the_cores():
    env = worker_environment(2, cores=2)
    assert env["OMP_NUM_THREADS"] == "1" and "--xla_cpu_multi_thread_eigen=false" in env["XLA_FLAGS"]
    env = worker_environment(2, cores=8)
    assert env["OMP_NUM_THREADS"] == "4" and "xla_cpu_multi_thread_eigen" not in env.get("XLA_FLAGS", "")


def _environment_at_start(model, material):
    """The environment this worker process was started with (not what was set in it since)."""
    with open("/proc/self/environ", "rb") as f:
        start = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    names = ("OMP_NUM_THREADS", "XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")
    return {"material": material, "status": "ok", "error": "", **{n: start.get(n.encode(), b"").decode() for n in names}}


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="reads /proc/self/environ (Linux)")
def test_workers_are_started_with_their_environment(monkeypatch):
    """A worker imports the parent's __main__ before Dask applies its `env`: a script that
    imports numpy or JAX at its top would read the thread counts and the compile cache's folder
    too early. So the variables are in place when the worker process starts, and this process's
    own environment is as it was afterwards."""
    from phonon_eval.fanout import run_materials

    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    rows = []
    run_materials("env", ["a", "b"], _environment_at_start, None, rows.append, cluster=Cluster(workers=2), progress=False)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for row in rows:
        assert row["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
        assert "pft-jax-cache-" in row["JAX_COMPILATION_CACHE_DIR"]
        if os.cpu_count() == 2:
            assert "--xla_cpu_multi_thread_eigen=false" in row["XLA_FLAGS"]
    assert os.environ["OMP_NUM_THREADS"] == "7" and "JAX_COMPILATION_CACHE_DIR" not in os.environ


def test_an_existing_cluster_by_address_and_by_scheduler_file(serial, tiny_ckpt, tmp_path):
    """--scheduler and --scheduler-file reach a cluster started elsewhere (here: by the test)."""
    import json

    from distributed import LocalCluster

    env = worker_environment(1, cores=1)
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None, env=env) as cluster:
        res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "CuAu-L10", "--out", str(tmp_path / "a.nc"), "--scheduler", cluster.scheduler_address, *FAST])
        assert res.exit_code == 0, res.output
        assert f"dask scheduler {cluster.scheduler_address}" in res.output
        scheduler_file = tmp_path / "scheduler.json"  # what `dask scheduler --scheduler-file` writes, in short
        scheduler_file.write_text(json.dumps({"type": "Scheduler", "address": cluster.scheduler_address}))
        res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "CuAu-L10", "--out", str(tmp_path / "b.nc"), "--scheduler-file", str(scheduler_file), *FAST])
        assert res.exit_code == 0, res.output
    a, b = xr.load_dataset(tmp_path / "a.nc"), xr.load_dataset(tmp_path / "b.nc")
    expected = [r for r in rows_from_dataset(serial) if r["material"] == "CuAu-L10"]
    expected = without_timing(to_dataset(expected, SETTINGS.temperatures, dict(serial.attrs)))
    expected.attrs = {}  # the runs differ in their inputs' attributes (split, output)
    for ds in (a, b):
        ds = without_timing(ds)
        ds.attrs = {}
        xr.testing.assert_identical(ds, expected)


def test_a_calculator_spec_on_two_workers_equals_the_serial_run(tmp_path):
    """Each worker builds the calculator from its spec (calculators are often not picklable);
    EMT is numpy, so the two runs agree to the last bit."""
    args = ["phonons", "--calculator", "ase.calculators.emt:EMT", "--split", "test", *FAST]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "serial.nc")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "workers.nc"), "--workers", "2"])
    assert res.exit_code == 0, res.output
    serial, parallel = (without_timing(xr.load_dataset(tmp_path / f"{n}.nc")) for n in ("serial", "workers"))
    assert list(parallel["status"].values) == ["ok"] * 4
    xr.testing.assert_identical(parallel, serial)


def test_a_calculator_provider_pickles_its_spec_not_its_calculator():
    import pickle

    provider = pe.AseCalculator(spec="ase.calculators.emt:EMT")
    assert provider.calculator() is provider.calculator()  # built once, kept
    copy = pickle.loads(pickle.dumps(provider))
    assert copy._calc is None and copy.spec == provider.spec
    assert type(copy.calculator()).__name__ == "EMT"


def _visible_devices() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_each_worker_sees_one_gpu_of_its_own(monkeypatch):
    """On a host with GPUs 3 and 5 (as CUDA_VISIBLE_DEVICES says; none is needed to check the
    sharing), worker 0 sees 3 only and worker 1 sees 5 only, and none preallocates memory."""
    from distributed import Client, LocalCluster

    from phonon_eval.devices import OneDevicePerWorker, gpu_ids

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert gpu_ids() == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu_ids() == []
    env = worker_environment(2, cores=2)
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, env=env) as cluster, Client(cluster) as client:
        client.register_plugin(OneDevicePerWorker(["3", "5"]))
        seen = client.run(_visible_devices)
    assert sorted(seen.values()) == ["3", "5"]


def test_each_worker_process_keeps_the_first_copy_of_the_model(monkeypatch):
    """Dask may drop a worker's copy of the model between two of its materials and send it
    again. An unpickled copy is a new object, and unless all its static parts compare by value
    (the Nequix models' do) JAX traces every compiled function again for it: a user's energy
    function from a script or notebook travels by value and its provider compiles afresh.
    So a worker evaluates with the first copy of a model key it was given."""
    import pickle

    import jax.numpy as jnp
    from ase.build import bulk

    from phonon_eval import derivatives, fanout

    monkeypatch.setattr(fanout, "_KEPT", {})
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)

    def soft_spheres(positions, cell, numbers):  # local: pickled by value, like __main__'s
        d = positions[:, None] - positions[None]
        return 0.5 * jnp.sum(jnp.exp(-jnp.sum(d**2, axis=-1)))

    model = pe.EnergyFunction(soft_spheres, name="soft")
    traces = []
    inner = derivatives.energy_forces_stress
    monkeypatch.setattr(derivatives, "energy_forces_stress", lambda *args: traces.append(1) or inner(*args))

    def copy():
        return pickle.loads(cloudpickle.dumps(model))

    def evaluate(model, material):
        model.energy_forces_stress(atoms)
        return {"material": material, "status": "ok", "error": "", "model": id(model)}

    copy().energy_forces_stress(atoms)
    copy().energy_forces_stress(atoms)
    assert len(traces) == 2, "an equal copy of the model was not traced again: the keeping is moot"
    traces.clear()
    rows = [fanout._evaluate_one(evaluate, copy(), material, "model-1") for material in ("a", "b", "c")]
    assert len(traces) == 1 and len({row["model"] for row in rows}) == 1
    other = fanout._evaluate_one(evaluate, copy(), "d", "model-2")
    assert other["model"] != rows[0]["model"] and len(traces) == 2


def test_workers_share_one_compilation_cache(tmp_path):
    """JAX's persistent cache in a folder the run owns: a program one process compiled is there
    for the next, which finds it (JAX logs the hit) instead of compiling it again."""
    env = {**os.environ, **worker_environment(1, cores=1, compile_cache=tmp_path)}
    code = (
        "import logging, jax, jax.numpy as jnp; logging.basicConfig(level=logging.DEBUG)\n"
        "def program(x): return jnp.sin(x) @ x.T\n"
        "print(jax.jit(program)(jnp.ones((3, 3))).sum())"
    )
    logs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        logs.append(done.stderr)
    assert any(tmp_path.iterdir()), "nothing was cached"
    hit = "Persistent compilation cache hit for 'jit_program'"
    assert hit not in logs[0] and hit in logs[1]
