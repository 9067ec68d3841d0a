"""genkit: one adversarial-training engine, pluggable domains, one CLI.

The public API (docs/python-api.md, docs/plugins.md) is what this module exports. Importing it does not
import torch.
"""

from __future__ import annotations

__version__ = "0.3.0"

from .api import train
from .domain import Data, Domain, NoOptions, Option, Phase, PhaseControl, StepContext, labels_are_classes
from .errors import GenkitError, warn
from .hookspecs import hookimpl
from .losses import Loss
from .options import option
from .progress import progress_bar
from .run import Run

# The documented submodules (docs/plugins.md), imported on first use so that ``import genkit`` stays light:
# ``genkit.metrics.frechet_distance(...)`` works after a plain ``import genkit``.
_SUBMODULES = frozenset({"metrics", "refnet", "sampling", "files", "testing", "datacache"})


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "Data", "Domain", "GenkitError", "Loss", "NoOptions", "Option", "Phase", "PhaseControl",
           "Run", "StepContext", "hookimpl", "labels_are_classes", "option", "progress_bar", "train", "warn"]
