"""genkit: one adversarial-training engine, pluggable domains, one CLI.

The public API (docs/python-api.md, docs/plugins.md) is what this module exports. Importing it does not
import torch.
"""

from __future__ import annotations

__version__ = "0.2.0"

from .api import train
from .domain import Data, Domain, NoOptions, Option, Phase, PhaseControl, StepContext
from .errors import GenkitError, warn
from .hookspecs import hookimpl
from .losses import Loss
from .options import option
from .progress import progress_bar
from .run import Run

__all__ = ["__version__", "Data", "Domain", "GenkitError", "Loss", "NoOptions", "Option", "Phase", "PhaseControl",
           "Run", "StepContext", "hookimpl", "option", "progress_bar", "train", "warn"]
