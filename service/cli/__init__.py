"""The `itsm-triage` command: a thin composition root.

Each subcommand group lives in its own module and imports workers/ or models/ lazily inside the command body,
so `itsm-triage serve` never loads torch.
"""

from __future__ import annotations

import click

from service.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """ITSM ticket triage: webhooks in, LLM triage, agent review, write-back."""
    ctx.obj = Settings()


def _register() -> None:
    """Attach the subcommand modules (each owns one concern)."""
    from service.cli import adapters, config, history, kb, model, privacy, replay, server, status, users

    server.register(main)
    status.register(main)
    config.register(main)
    replay.register(main)
    model.register(main)
    users.register(main)
    history.register(main)
    kb.register(main)
    privacy.register(main)
    adapters.register(main)


_register()
