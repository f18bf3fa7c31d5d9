"""Force providers: what the evaluators need from a model, whatever the model is.

An evaluator needs three things of a model: an ASE calculator to relax with, the forces of many
displaced copies of one supercell, and, where the model can give them, exact Hessian columns
(analytic force constants from Hessian-vector products). A `ForceProvider` offers them:

- `JaxPotential`: the built-in `Potential` (Nequix, or any `EdgeModel`): all of it, displaced
  copies batched through one compiled function, in float32 or float64.
- `EnergyFunction`: any JAX energy `E(positions, cell, numbers)`, an equinox module or a plain
  function with its parameters: all of it, every derivative by autodiff.
- `AseCalculator`: any ASE calculator (SevenNet, CHGNet, MACE, EMT, ...), given as an object or
  built from a `module:factory` spec: forces one structure at a time, no Hessian.
- `HarmonicModel`: given force constants as a model (forces -Φ·u, exact Hessian columns), to
  check that a protocol treats model and reference alike.

`as_provider` turns a checkpoint path, a `Potential`, an ASE calculator or a provider into one,
so every evaluator takes any of them. A provider sent to Dask workers carries what rebuilds it
(a spec, parameters), never a live calculator or compiled function: each worker builds its own
once and keeps it for all its materials.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Union

import ase
import numpy as np

__all__ = [
    "AseCalculator",
    "EnergyFunction",
    "ForceError",
    "ForceProvider",
    "HarmonicModel",
    "JaxPotential",
    "ModelLike",
    "ProviderError",
    "as_provider",
    "check_forces",
]


class ProviderError(ValueError):
    """A model that cannot be built or used as asked (bad spec, factory error, missing capability)."""


class ForceError(RuntimeError):
    """A model returned forces that cannot be used (NaN, infinite, wrong shape)."""


def check_forces(forces: Any, n_atoms: int, who: str, what: str) -> np.ndarray:
    """`forces` as an (n_atoms, 3) float array, or ForceError naming `who` and `what`."""
    try:
        f = np.asarray(forces, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ForceError(f"{who} returned forces that are not numbers for {what}: {err}") from None
    if f.shape != (n_atoms, 3):
        raise ForceError(f"{who} returned forces of shape {f.shape} for {what}, expected ({n_atoms}, 3)")
    if not np.isfinite(f).all():
        raise ForceError(f"{who} returned NaN or infinite forces for {what}")
    return f


class ForceProvider:
    """What the evaluators need from a model. Subclass it to bring a model of another kind.

    Attributes:
        name: how tables, plots and results name the model.
        has_hessian: `hessian_columns` is available (exact force constants from HVPs).
    """

    name: str = "model"
    has_hessian: bool = False

    def check_elements(self, numbers: np.ndarray) -> None:
        """Raise (naming the elements) if the model cannot treat these atomic numbers."""

    def calculator(self) -> Any:
        """An ASE calculator (energy, forces, stress) for relaxations."""
        raise NotImplementedError

    def forces(self, atoms: ase.Atoms, positions: np.ndarray) -> np.ndarray:
        """Forces (B, N, 3) eV/Å of B copies of `atoms` (same cell) at `positions` (B, N, 3) Å."""
        raise NotImplementedError

    def hessian_columns(self, atoms: ase.Atoms, columns: list[tuple[int, int]]) -> np.ndarray:
        """Hessian columns d²E / dr dr[atom, direction], (n, N, 3) eV/Å², where `has_hessian`."""
        raise ProviderError(f"{self.name} gives no Hessian-vector products: use finite displacements")

    def provenance(self) -> dict[str, str]:
        """What was evaluated, as netCDF attributes (`model`, `model_kind`, `model_sha256`, ...)."""
        return {"model": self.name, "model_kind": type(self).__name__}


ModelLike = Union[ForceProvider, "ase.calculators.calculator.BaseCalculator", str, os.PathLike, Any]
"""A provider, a `Potential`, an ASE calculator, or the path of a .ckpt / .nqx file."""


def as_provider(model: ModelLike, *, dtype: str | None = None) -> ForceProvider:
    """The force provider for `model`.

    Args:
        model: a ForceProvider (returned as is), a `Potential`, an ASE calculator, or the path
            of a checkpoint (.ckpt) or public Nequix (.nqx) file.
        dtype: "float32" or "float64" for JAX potentials (None: as stored).
    """
    from ase.calculators.calculator import BaseCalculator

    from phonon_eval.potential import Potential

    if isinstance(model, ForceProvider):
        if dtype is not None and not isinstance(model, JaxPotential):
            raise ProviderError(f"dtype applies to JAX potentials, not to {model.name}")
        return model.with_dtype(dtype) if isinstance(model, JaxPotential) and dtype else model
    if isinstance(model, Potential):
        return JaxPotential(model, dtype=dtype)
    if isinstance(model, BaseCalculator):
        if dtype is not None:
            raise ProviderError("dtype applies to JAX potentials; set an ASE calculator's precision where it is built")
        return AseCalculator(model)
    if isinstance(model, (str, os.PathLike)):
        from phonon_eval.checkpoint import load_potential

        return JaxPotential(load_potential(model), dtype=dtype)
    raise ProviderError(
        f"cannot evaluate a {type(model).__name__}: give a checkpoint path, a Potential, an ASE "
        "calculator, or a ForceProvider (EnergyFunction wraps a JAX energy function)"
    )


# --------------------------------------------------------------------------------------------
# JAX: the built-in potential and any energy function
# --------------------------------------------------------------------------------------------

DTYPES = ("float32", "float64")


def _check_dtype(dtype: str | None) -> str | None:
    if dtype is not None and str(np.dtype(dtype)) not in DTYPES:
        raise ProviderError(f"dtype must be float32 or float64, got {dtype!r}")
    return None if dtype is None else str(np.dtype(dtype))


class JaxPotential(ForceProvider):
    """The built-in potential: exact Hessian columns, batched displaced copies, float32 or float64.

    The float64 copy of the parameters is made where it is used (inside x64 mode) and never
    pickled, so a provider sent to a worker carries the parameters as stored.
    """

    has_hessian = True

    def __init__(self, potential: Any, *, dtype: str | None = None, chunk: int = 8):
        self.potential = potential
        self.dtype = _check_dtype(dtype) or str(potential.dtype)
        self.chunk = chunk
        self.name = Path(potential.source).stem if potential.source else "potential"
        self._cast: Any = None

    def with_dtype(self, dtype: str | None) -> "JaxPotential":
        return JaxPotential(self.potential, dtype=dtype, chunk=self.chunk)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cast": None}

    @property
    def _potential(self) -> Any:
        if str(self.potential.dtype) == self.dtype:
            return self.potential
        if self._cast is None:
            self._cast = self.potential.astype(self.dtype)
        return self._cast

    def check_elements(self, numbers: np.ndarray) -> None:
        self.potential.species(numbers)

    def calculator(self) -> Any:
        from phonon_eval.calculator import PotentialCalculator

        return PotentialCalculator(self.potential, dtype=self.dtype)

    def forces(self, atoms: ase.Atoms, positions: np.ndarray) -> np.ndarray:
        from phonon_eval.potential import batched_forces, precision

        positions = np.asarray(positions, dtype=np.float64)
        # the length of each atom's displacement: random ones are not along an axis
        moved = float(np.linalg.norm(positions - atoms.positions[None], axis=-1).max()) if len(positions) else 0.0
        with precision(self.dtype):
            # no pair distance changes by more than 2x the largest displacement, so that skin keeps
            # every neighbour of every copy; a wider one would only add edges (the cost of a large
            # model grows with them: 0.2 Å adds 12 % at a 5 Å cutoff)
            return batched_forces(self._potential, atoms, positions, skin=2 * moved + 0.01, chunk=self.chunk)

    def hessian_columns(self, atoms: ase.Atoms, columns: list[tuple[int, int]]) -> np.ndarray:
        from phonon_eval.potential import hessian_columns, precision

        with precision(self.dtype):
            return hessian_columns(self._potential, atoms, columns)

    def provenance(self) -> dict[str, str]:
        return {
            "model": self.name,
            "model_kind": "checkpoint" if self.potential.source else "jax-potential",
            "model_path": self.potential.source,
            "model_sha256": self.potential.sha256,
            "model_dtype": self.dtype,
        }


class EnergyFunction(ForceProvider):
    """Any JAX energy function as a provider, with every derivative by autodiff.

    `fn(positions (N, 3) Å, cell (3, 3) Å, numbers (N,) int) -> energy (eV)`, or with
    `params` given, `fn(params, positions, cell, numbers)`. It must handle periodic images
    itself; it sees the real atoms only (no padding), so each atom count compiles once.
    An equinox module is a callable pytree: pass it as `fn`, its arrays are traced.

    Args:
        fn: the energy function (module-level or an equinox module, to run on Dask workers).
        params: its parameters (any pytree), or None.
        name: how results name it.
        dtype: "float32" (default) or "float64" (computed inside JAX's x64 mode).
        elements: atomic numbers it knows (None: all).
        chunk: displaced copies per call of the compiled force function.
    """

    has_hessian = True

    def __init__(
        self,
        fn: Callable[..., Any],
        params: Any = None,
        *,
        name: str | None = None,
        dtype: str = "float32",
        elements: tuple[int, ...] | None = None,
        chunk: int = 8,
    ):
        self.fn, self.params = fn, params
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.dtype = _check_dtype(dtype)
        self.elements = None if elements is None else tuple(int(z) for z in elements)
        self.chunk = chunk
        self._jitted: dict[str, Callable] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_jitted": None}

    def _functions(self) -> dict[str, Callable]:
        """Compiled derivatives, each taking (fn, params, ...): passed, not closed over, so an
        equinox module's arrays are traced like the parameters, not baked in as constants."""
        if self._jitted is None:
            import equinox as eqx

            from phonon_eval import derivatives

            def bound(fn, params, numbers):
                if params is None:
                    return lambda r, c: fn(r, c, numbers)
                return lambda r, c: fn(params, r, c, numbers)

            self._jitted = {
                "efs": eqx.filter_jit(lambda f, p, r, c, z: derivatives.energy_forces_stress(bound(f, p, z), r, c)),
                "ef": eqx.filter_jit(lambda f, p, r, c, z: derivatives.energy_and_forces(bound(f, p, z), r, c)),
                "forces": eqx.filter_jit(
                    lambda f, p, rs, c, z: derivatives.over_leading_axis(
                        lambda r: derivatives.forces(bound(f, p, z), r, c), rs
                    )
                ),
                "hvp": eqx.filter_jit(
                    lambda f, p, r, c, z, vs: derivatives.over_leading_axis(
                        lambda v: derivatives.hvp(bound(f, p, z), r, c, v), vs
                    )
                ),
            }
        return self._jitted

    def _args(self, atoms: ase.Atoms) -> tuple[Any, Any, Any, Any]:
        """(fn, params, cell, numbers) in this provider's dtype: a module's arrays and the
        parameters' floats are cast, so float64 is float64 throughout."""
        import equinox as eqx
        import jax
        import jax.numpy as jnp

        dtype = jnp.dtype(self.dtype)
        fn = jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, self.fn)
        params = self.params
        if params is not None:
            cast = lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x  # noqa: E731
            params = jax.tree.map(cast, params)
        return fn, params, jnp.asarray(atoms.cell.array, dtype), jnp.asarray(atoms.numbers, jnp.int32)

    def check_elements(self, numbers: np.ndarray) -> None:
        if self.elements is None:
            return
        from phonon_eval.potential import unknown_elements

        unknown = unknown_elements(numbers, self.elements)
        if unknown:
            raise ProviderError(f"{self.name} does not know {unknown}")

    def energy_forces_stress(self, atoms: ase.Atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Energy (eV), forces (N, 3) eV/Å and stress (3, 3) eV/Å³ (None unless fully periodic)."""
        import jax.numpy as jnp

        from phonon_eval.potential import precision

        with precision(self.dtype):
            energy, params, cell, numbers = self._args(atoms)
            r = jnp.asarray(atoms.positions, cell.dtype)
            if atoms.pbc.all():
                e, f, s = self._functions()["efs"](energy, params, r, cell, numbers)
                return float(e), np.asarray(f, np.float64), np.asarray(s, np.float64)
            e, f = self._functions()["ef"](energy, params, r, cell, numbers)
            return float(e), np.asarray(f, np.float64), None

    def calculator(self) -> Any:
        from phonon_eval.calculator import FunctionCalculator

        return FunctionCalculator(self.energy_forces_stress)

    def forces(self, atoms: ase.Atoms, positions: np.ndarray) -> np.ndarray:
        import jax.numpy as jnp

        from phonon_eval.potential import chunked, precision

        with precision(self.dtype):
            energy, params, cell, numbers = self._args(atoms)
            compiled = self._functions()["forces"]
            return chunked(lambda rs: compiled(energy, params, jnp.asarray(rs, cell.dtype), cell, numbers), np.asarray(positions), self.chunk)

    def hessian_columns(self, atoms: ase.Atoms, columns: list[tuple[int, int]]) -> np.ndarray:
        import jax.numpy as jnp

        from phonon_eval.potential import chunked, column_vectors, precision

        vs = column_vectors(columns, len(atoms), np.float64)
        with precision(self.dtype):
            energy, params, cell, numbers = self._args(atoms)
            r = jnp.asarray(atoms.positions, cell.dtype)
            compiled = self._functions()["hvp"]
            return chunked(lambda v: compiled(energy, params, r, cell, numbers, jnp.asarray(v, cell.dtype)), vs, 4)

    def provenance(self) -> dict[str, str]:
        module = getattr(self.fn, "__module__", None) or type(self.fn).__module__
        qualname = getattr(self.fn, "__qualname__", type(self.fn).__qualname__)
        return {
            "model": self.name,
            "model_kind": "jax-energy-function",
            "model_function": f"{module}:{qualname}",
            "model_dtype": self.dtype,
        }


# --------------------------------------------------------------------------------------------
# ASE calculators
# --------------------------------------------------------------------------------------------


def _import_factory(spec: str) -> Callable[..., Any]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ProviderError(f"calculator {spec!r}: expected MODULE:FACTORY, e.g. ase.calculators.emt:EMT")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or whatever the package raises while importing
        raise ProviderError(f"calculator {spec!r}: cannot import {module_name!r} ({type(err).__name__}: {err})") from None
    factory: Any = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ProviderError(f"calculator {spec!r}: module {module_name!r} has no {attr!r}")
    if not callable(factory):
        raise ProviderError(f"calculator {spec!r}: {attr!r} is not callable")
    return factory


def _device_keyword(factory: Callable[..., Any]) -> str | None:
    """The keyword a factory names its device by (SevenNet: device, CHGNet: use_device), if any.

    A bare **kwargs does not count: CHGNet takes `device=` that way and ignores it.
    """
    try:
        names = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    return next((k for k in ("device", "use_device") if k in names), None)


def _distribution_versions(module: str) -> dict[str, str]:
    """Versions of the distribution that provides `module`'s top-level package, and of torch
    when it is loaded (the numbers of a PyTorch model depend on it too)."""
    top = module.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top, [top])
    versions = {}
    for name in [*names, *(["torch"] if "torch" in sys.modules else [])]:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def _weights_file(calc: Any, kwargs: dict[str, Any]) -> Path | None:
    """The weights file a calculator loaded, where its package exposes it."""
    candidates: list[Any] = list(kwargs.values())
    for attr in ("model_path", "checkpoint_path", "checkpoint", "model_file", "path"):
        candidates.append(getattr(calc, attr, None))
    module = type(calc).__module__
    # neither package keeps the path on the calculator: resolve it as the package does
    if module.startswith("sevenn") and isinstance(kwargs.get("model", "7net-0"), str):
        with contextlib.suppress(Exception):
            from sevenn.util import pretrained_name_to_path

            candidates.append(pretrained_name_to_path(kwargs.get("model", "7net-0")))
    if module.startswith("chgnet") and kwargs.get("model") is None:
        with contextlib.suppress(Exception):
            from chgnet.model import model as chgnet_model

            folder = Path(chgnet_model.module_dir).parent / "pretrained" / str(calc.version)
            candidates.extend(sorted(folder.glob("*.pth.tar"))[:1])
    for value in candidates:
        if isinstance(value, (str, os.PathLike)) and len(str(value)) < 4096:
            with contextlib.suppress(OSError, ValueError):
                if Path(value).is_file():
                    return Path(value)
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class AseCalculator(ForceProvider):
    """An ASE calculator: forces one structure at a time, finite displacements for force constants.

    Give the calculator itself (in process), or a spec `module:factory` with keyword arguments
    (picklable: each Dask worker builds its own calculator once). `device` ("cpu", "cuda") is
    passed to the factory as `device=` or `use_device=`, whichever it declares (SevenNet,
    CHGNet); a factory with neither refuses it.
    """

    def __init__(
        self,
        calculator: Any = None,
        *,
        spec: str | None = None,
        kwargs: dict[str, Any] | None = None,
        device: str | None = None,
    ):
        if (calculator is None) == (spec is None):
            raise ProviderError("give an ASE calculator or a MODULE:FACTORY spec, not both or neither")
        self.spec, self.kwargs, self.device = spec, dict(kwargs or {}), device
        self._calc = calculator
        if calculator is None:
            self._calc = self._build()  # fail here, before any material, if it cannot be built
        cls = type(self._calc)
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        self.name = f"{cls.__name__}({args})" if args else cls.__name__
        self._provenance: dict[str, str] | None = None

    def _build(self) -> Any:
        assert self.spec is not None
        factory = _import_factory(self.spec)
        kwargs = dict(self.kwargs)
        if self.device is not None:
            keyword = _device_keyword(factory)
            if keyword is None:
                raise ProviderError(f"calculator {self.spec!r} takes no device or use_device keyword; leave out --device")
            kwargs[keyword] = self.device
        try:
            calc = factory(**kwargs)
        except Exception as err:  # whatever the factory raises
            raise ProviderError(f"calculator {self.spec!r} with {json.dumps(self.kwargs)}: {type(err).__name__}: {err}") from None
        if not callable(getattr(calc, "get_property", None)):  # what ase.Atoms asks a calculator
            raise ProviderError(f"calculator {self.spec!r} returned a {type(calc).__name__}, not an ASE calculator")
        return calc

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.spec is not None:
            state["_calc"] = None  # calculators are often not picklable; the worker builds its own
        return state

    def calculator(self) -> Any:
        if self._calc is None:
            self._calc = self._build()
        return self._calc

    def forces(self, atoms: ase.Atoms, positions: np.ndarray) -> np.ndarray:
        a = atoms.copy()
        a.calc = self.calculator()
        out = np.empty((len(positions), len(atoms), 3))
        for k, r in enumerate(positions):
            a.positions = r
            out[k] = check_forces(a.get_forces(), len(atoms), self.name, f"displaced structure {k + 1} of {len(positions)}")
        return out

    def provenance(self) -> dict[str, str]:
        if self._provenance is None:
            calc = self.calculator()
            cls = type(calc)
            versions = _distribution_versions(cls.__module__)
            weights = _weights_file(calc, self.kwargs)
            self._provenance = {
                "model": self.name,
                "model_kind": "ase-calculator",
                "calculator": self.spec or f"{cls.__module__}:{cls.__qualname__}",
                "calculator_kwargs": json.dumps(self.kwargs, sort_keys=True, default=str),
                "calculator_device": self.device or "",
                "model_versions": "; ".join(f"{k} {v}" for k, v in versions.items()),
                "model_path": "" if weights is None else str(weights),
                "model_sha256": "" if weights is None else _sha256(weights),
            }
        return self._provenance


class HarmonicModel(ForceProvider):
    """The harmonic expansion around a supercell as a model: forces -Φ·u, Hessian columns Φ.

    Evaluated with a record's own force constants (and no relaxation), any protocol must give
    zero error: the model and reference sides go through the same post-processing.

    Args:
        supercell: the supercell the force constants belong to (its atoms in their order).
        force_constants: (N, N, 3, 3) full force constants, eV/Å².
        name: how results name it.
    """

    has_hessian = True

    def __init__(self, supercell: ase.Atoms, force_constants: np.ndarray, name: str = "harmonic"):
        self.supercell = supercell.copy()
        self.force_constants = np.asarray(force_constants, dtype=np.float64)
        self.name = name
        n = len(supercell)
        if self.force_constants.shape != (n, n, 3, 3):
            raise ProviderError(f"{name}: force constants of shape {self.force_constants.shape} for {n} atoms")

    def _check(self, atoms: ase.Atoms) -> None:
        same = len(atoms) == len(self.supercell) and np.allclose(atoms.cell.array, self.supercell.cell.array, atol=1e-8)
        if not same or not np.allclose(atoms.positions, self.supercell.positions, atol=1e-6):
            raise ProviderError(f"{self.name} knows only its own supercell ({len(self.supercell)} atoms, unrelaxed)")

    def calculator(self) -> Any:
        raise ProviderError(f"{self.name} cannot relax a structure: evaluate it with relax=False")

    def forces(self, atoms: ase.Atoms, positions: np.ndarray) -> np.ndarray:
        self._check(atoms)
        u = np.asarray(positions, dtype=np.float64) - self.supercell.positions[None]
        return -np.einsum("abij,nbj->nai", self.force_constants, u)

    def hessian_columns(self, atoms: ase.Atoms, columns: list[tuple[int, int]]) -> np.ndarray:
        self._check(atoms)
        return np.stack([self.force_constants[:, atom, :, direction] for atom, direction in columns])

    def provenance(self) -> dict[str, str]:
        return {"model": self.name, "model_kind": "harmonic"}
