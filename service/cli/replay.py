"""`itsm-triage replay`: post signed sample webhooks (bundled fixtures or a file) to a running service."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import click
import httpx

from service.devsecrets import load_dev_secrets, secrets_file
from service.samples import SAMPLES, Delivery, as_new_ticket, detect_source, load_sample, make_delivery
from service.settings import Settings


def register(group: click.Group) -> None:
    """Attach this module's commands to the root group."""
    group.add_command(replay)


def _secret(settings: Settings, source: str) -> str:
    """The configured webhook secret of a source, else the one `run` generated under var/."""
    configured = settings.jira.webhook_secret if source == "jira" else settings.servicenow.webhook_secret
    if configured is not None:
        return configured.get_secret_value()
    name = "ITSM_JIRA__WEBHOOK_SECRET" if source == "jira" else "ITSM_SERVICENOW__WEBHOOK_SECRET"
    stored = load_dev_secrets(secrets_file(settings)).get(name)
    if not stored:
        raise click.UsageError(f"no {source} webhook secret: set {name} or start `itsm-triage run` once first")
    return stored


def _payloads(sample: tuple[str, ...], file: Path | None) -> list[dict[str, Any]]:
    """The payloads to send: a JSON (or JSONL) file, else the named or default bundled samples."""
    if file is not None:
        text = file.read_text(encoding="utf-8")
        try:
            loaded = json.loads(text)
            items = loaded if isinstance(loaded, list) else [loaded]
        except json.JSONDecodeError:
            try:
                items = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as exc:
                raise click.BadParameter(f"{file} is neither JSON nor JSON lines: {exc}", param_hint="--file") from None
        if not all(isinstance(i, dict) for i in items):
            raise click.BadParameter(f"{file} must hold JSON objects", param_hint="--file")
        return items
    names = sample or ("jira_issue_created", "servicenow_incident_webhook")
    return [load_sample(name) for name in names]


@click.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Base URL of the running service.")
@click.option("--sample", multiple=True, type=click.Choice(sorted(SAMPLES)), help="Bundled sample(s) to send.")
@click.option("--file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSON/JSONL payload file.")
@click.option(
    "--count",
    default=1,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Send each payload as N distinct tickets (new ids).",
)
@click.option("--keep-ids", is_flag=True, help="Send payloads unchanged (a second replay is then a duplicate).")
@click.option(
    "--headers",
    "headers_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --file: send the file's exact bytes with these recorded headers (JSON), not re-signed.",
)
@click.pass_obj
def replay(
    settings: Settings,
    url: str,
    sample: tuple[str, ...],
    file: Path | None,
    count: int,
    keep_ids: bool,
    headers_file: Path | None,
) -> None:
    """Post signed webhooks to a running service and print each answer."""
    if headers_file is not None:
        if file is None:
            raise click.UsageError("--headers needs --file (the body those headers were recorded with)")
        _send_as_recorded(url, file, headers_file)
        return
    payloads = _payloads(sample, file)
    failures = 0
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for index, payload in enumerate(payloads):
            try:
                source = detect_source(payload)
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None
            for n in range(count):
                data = payload if keep_ids else as_new_ticket(payload, _ticket_number(index, n))
                # --keep-ids resends the same delivery (same id): the receiver must answer "duplicate".
                same_id = "replay-" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]
                delivery: Delivery = make_delivery(
                    data,
                    secret=_secret(settings, source),
                    delivery_id=same_id if keep_ids and source == "jira" else None,
                )
                try:
                    response = client.post(delivery.path, content=delivery.body, headers=delivery.headers)
                except httpx.HTTPError as exc:
                    raise click.ClickException(f"cannot reach {url}: {exc}") from None
                failures += response.status_code >= 300
                click.echo(f"{source:10} {response.status_code} {response.text}")
    if failures:
        raise click.ClickException(f"{failures} deliveries were not accepted")


def _send_as_recorded(url: str, file: Path, headers_file: Path) -> None:
    """Post a recorded delivery byte for byte (its signature must match the service's configured secret)."""
    try:
        headers = json.loads(headers_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{headers_file} is not JSON: {exc}", param_hint="--headers") from None
    if not isinstance(headers, dict):
        raise click.BadParameter(f"{headers_file} must be a JSON object of header names", param_hint="--headers")
    body = file.read_bytes()
    try:
        source = detect_source(json.loads(body))
    except (ValueError, AttributeError) as exc:
        raise click.BadParameter(f"{file}: {exc}", param_hint="--file") from None
    try:
        response = httpx.post(f"{url}/webhooks/{source}", content=body, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    click.echo(f"{source:10} {response.status_code} {response.text}")
    if response.status_code >= 300:
        raise click.ClickException(
            "the delivery was not accepted (is the service's secret the one it was signed with?)"
        )


_RUN_BASE = secrets.randbelow(10**12) * 1000


def _ticket_number(index: int, n: int) -> int:
    """Distinct ticket numbers per run (random base), so each replay of the samples creates new tickets."""
    return _RUN_BASE + index * 10**8 + n
