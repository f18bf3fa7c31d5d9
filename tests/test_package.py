"""The package's lazy top-level names."""

import subprocess
import sys

import phonon_eval as pe


def test_every_exported_name_resolves_to_its_definition():
    for name in pe.__all__:
        value = getattr(pe, name)
        if name != "__version__":
            assert value.__name__ == name and value.__module__.startswith("phonon_eval."), name


def test_reading_records_does_not_start_jax():
    # `pft-eval data` reads records only; importing JAX would add seconds to every such command
    code = "import sys, phonon_eval, phonon_eval.datasets, cli.data; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
