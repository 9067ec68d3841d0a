"""The hooks a genkit plugin can implement. Every hook is called with keyword arguments."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("genkit")
hookimpl = pluggy.HookimplMarker("genkit")


@hookspec
def genkit_register_domains(register):
    """Register domains: call ``register(domain)`` with a ``genkit.Domain`` instance for each."""


@hookspec
def genkit_register_losses(register):
    """Register adversarial losses: call ``register(loss)`` with a ``genkit.Loss`` for each."""


@hookspec
def genkit_register_commands(cli):
    """Add click commands to the ``genkit`` command group ``cli``."""
