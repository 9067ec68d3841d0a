"""The one error class for expected failures.

Anything a user can cause (a missing file, a bad value, an unknown domain) raises ``GenkitError``.
The CLI prints it as one line on stderr and exits 1; a traceback is shown only with ``GENKIT_DEBUG=1``.
"""

from __future__ import annotations

import click


class GenkitError(click.ClickException):
    """An expected failure, reported to the user as one line."""

    exit_code = 1

    def show(self, file=None) -> None:  # one line, no "Error:" noise from click's default formatting
        click.echo(f"genkit: error: {self.format_message()}", err=True)


def warn(message: str) -> None:
    """A one-line warning on stderr (never stdout, which carries data)."""
    click.echo(f"genkit: warning: {message}", err=True)
