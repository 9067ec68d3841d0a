"""genkit: one adversarial-training engine, pluggable domains, one CLI.

The public API for plugin authors is what this module exports. Importing it does not import torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .domain import Data, Domain, Option, StepContext
from .errors import GenkitError, warn
from .hookspecs import hookimpl
from .losses import Loss
from .progress import progress_bar

__all__ = ["__version__", "Data", "Domain", "GenkitError", "Loss", "Option", "StepContext", "hookimpl", "progress_bar", "warn"]
