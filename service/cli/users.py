"""`itsm-triage users …` (accounts, API tokens) and `itsm-triage export-training` (review feedback as JSONL)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.settings import Settings

ROLES = click.Choice(["viewer", "agent", "admin"])


def register(group: click.Group) -> None:
    """Attach this module's commands to the root group."""
    group.add_command(users)
    group.add_command(export_training)


def _engine(settings: Settings) -> Engine:
    """The database, migrated first when allowed, so the first admin can be created before the first `run`."""
    from service.db import make_engine
    from service.migrate import upgrade

    if settings.api.migrate_on_start:
        upgrade(settings)
    return make_engine(settings)


def _read_password(password: str | None, password_stdin: bool) -> str:
    if password_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    elif password is not None:
        value = password
    else:
        value = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(value) < 8:
        raise click.UsageError("the password must have at least 8 characters")
    return value


@click.group()
def users() -> None:
    """Review accounts and their API tokens."""


@users.command("create")
@click.option("--username", required=True, help="Login name.")
@click.option("--role", type=ROLES, default="viewer", show_default=True, help="viewer, agent or admin.")
@click.option("--password", default=None, help="The password (visible in shell history; prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.pass_obj
def create_user(settings: Settings, username: str, role: str, password: str | None, password_stdin: bool) -> None:
    """Create a local account with a scrypt-hashed password (e.g. the first admin)."""
    from service.db import session_scope
    from service.domain.tables import User
    from service.review import audit
    from service.review.security import hash_password

    secret = _read_password(password, password_stdin)
    engine = _engine(settings)
    with session_scope(engine) as session:
        if session.exec(select(User).where(User.username == username)).first() is not None:
            raise click.ClickException(f"user {username!r} already exists")
        session.add(User(username=username, role=role, password_hash=hash_password(secret)))
        audit.record(
            session,
            actor="cli",
            action="user_created",
            target_type="user",
            target_id=username,
            after={"username": username, "role": role},
        )
    engine.dispose()
    click.echo(f"created {role} {username}")


@users.command("set-role")
@click.option("--username", required=True)
@click.option("--role", type=ROLES, required=True)
@click.pass_obj
def set_role(settings: Settings, username: str, role: str) -> None:
    """Change an account's role."""
    _update_user(settings, username, action="role_changed", role=role)


@users.command("disable")
@click.option("--username", required=True)
@click.pass_obj
def disable(settings: Settings, username: str) -> None:
    """Disable an account: its sessions and API tokens stop working at once."""
    _update_user(settings, username, action="user_disabled", disabled=True)


@users.command("enable")
@click.option("--username", required=True)
@click.pass_obj
def enable(settings: Settings, username: str) -> None:
    """Re-enable a disabled account."""
    _update_user(settings, username, action="user_enabled", disabled=False)


def _update_user(settings: Settings, username: str, *, action: str, **changes: object) -> None:
    from service.db import session_scope
    from service.domain.tables import User
    from service.review import audit

    engine = _engine(settings)
    with session_scope(engine) as session:
        user = session.exec(select(User).where(User.username == username)).first()
        if user is None:
            raise click.ClickException(f"no user {username!r}")
        before = {k: getattr(user, k) for k in changes}
        for key, value in changes.items():
            setattr(user, key, value)
        session.add(user)
        audit.record(
            session,
            actor="cli",
            action=action,
            target_type="user",
            target_id=username,
            before=before,
            after=dict(changes),
        )
    engine.dispose()
    click.echo(f"{action.replace('_', ' ')}: {username}")


@users.group("token")
def token() -> None:
    """API tokens for /api/v1 (shown once, stored hashed)."""


@token.command("create")
@click.option("--username", required=True)
@click.option("--name", default="", help="What the token is for.")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=90, show_default=True)
@click.pass_obj
def create_token(settings: Settings, username: str, name: str, expires_days: int) -> None:
    """Create an API token and print it (it cannot be shown again)."""
    from service.db import session_scope
    from service.domain.tables import ApiToken, User
    from service.review import audit
    from service.review.security import hash_api_token, new_api_token

    engine = _engine(settings)
    value = new_api_token()
    with session_scope(engine) as session:
        user = session.exec(select(User).where(User.username == username)).first()
        if user is None or user.id is None:
            raise click.ClickException(f"no user {username!r}")
        row = ApiToken(
            user_id=user.id,
            token_hash=hash_api_token(value),
            name=name,
            expires_at=datetime.now(UTC) + timedelta(days=expires_days),
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor="cli",
            action="token_created",
            target_type="api_token",
            target_id=str(row.id),
            after={
                "username": username,
                "name": name,
                "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            },
        )
    engine.dispose()
    click.echo(value)


@token.command("revoke")
@click.option("--id", "token_id", type=int, required=True)
@click.pass_obj
def revoke_token(settings: Settings, token_id: int) -> None:
    """Revoke (delete) an API token by id."""
    from service.db import session_scope
    from service.domain.tables import ApiToken
    from service.review import audit

    engine = _engine(settings)
    with session_scope(engine) as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise click.ClickException(f"no token {token_id}")
        session.delete(row)
        audit.record(
            session,
            actor="cli",
            action="token_revoked",
            target_type="api_token",
            target_id=str(token_id),
            before={"user_id": row.user_id, "name": row.name},
        )
    engine.dispose()
    click.echo(f"revoked token {token_id}")


@token.command("list")
@click.pass_obj
def list_tokens(settings: Settings) -> None:
    """List tokens (ids, owners, expiry; never the secrets)."""
    from service.domain.tables import ApiToken, User

    engine = _engine(settings)
    with Session(engine) as session:
        for tok, user in session.exec(select(ApiToken, User).join(User, col(User.id) == col(ApiToken.user_id))):
            click.echo(f"{tok.id}\t{user.username}\t{tok.name}\texpires {tok.expires_at}")
    engine.dispose()


@click.command("export-training")
@click.option(
    "--since",
    required=True,
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Feedback from this UTC date on.",
)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def export_training(settings: Settings, since: datetime, out_path: Path) -> None:
    """Write reviewed tickets as JSONL in the training format (subject, body, label columns, reply)."""
    from service.review.feedback import training_rows, write_jsonl

    engine = _engine(settings)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with Session(engine) as session, out_path.open("w", encoding="utf-8") as out:
        n = write_jsonl(training_rows(session, since=since.replace(tzinfo=UTC)), out)
    engine.dispose()
    click.echo(f"wrote {n} rows to {out_path}")
