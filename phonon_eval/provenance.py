"""What decides the numbers, as netCDF attributes: the settings and the software versions."""

from __future__ import annotations

import dataclasses
import platform
from typing import Any

import numpy as np

__all__ = ["settings_attrs", "software_versions"]


def settings_attrs(settings: Any) -> dict[str, Any]:
    """A settings dataclass as netCDF attributes `setting_<field>` (bools as 0/1, None as "none")."""
    out = {}
    for key, value in dataclasses.asdict(settings).items():
        if value is None:
            value = "none"
        elif isinstance(value, bool):
            value = int(value)
        elif isinstance(value, tuple):
            value = np.asarray(value)
        out[f"setting_{key}"] = value
    return out


def software_versions() -> dict[str, str]:
    """Versions of everything that decides the numbers, for the results' `source` attribute."""
    import jax
    import phono3py
    import phonopy
    import spglib
    import xarray as xr

    import phonon_eval

    return {
        "pft-toolkit": phonon_eval.__version__,
        "phonopy": phonopy.__version__,
        "phono3py": phono3py.__version__,
        "spglib": spglib.__version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "xarray": xr.__version__,
        "python": platform.python_version(),
    }
