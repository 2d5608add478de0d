"""Account administration from the UI and API: list users, change a role, disable or enable an account."""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.db import session_scope
from service.domain.tables import ApiToken, Role, User
from service.review import audit
from service.review.auth import ReviewError


def list_users(engine: Engine) -> list[tuple[User, int]]:
    """All accounts by name, each with its number of API tokens."""
    with Session(engine) as session:
        counts = dict(
            session.exec(select(ApiToken.user_id, func.count()).group_by(col(ApiToken.user_id))).all()  # type: ignore[arg-type]
        )
        return [
            (u, int(counts.get(u.id or 0, 0))) for u in session.exec(select(User).order_by(col(User.username))).all()
        ]


def update_user(engine: Engine, *, actor: str, user_id: int, role: Role | None, disabled: bool | None) -> User:
    """Change an account's role and/or disabled flag; one audit row per change; never leaves no active admin."""
    with session_scope(engine) as session:
        user = session.get(User, user_id)
        if user is None:
            raise ReviewError(404, "not_found", "No user with this id.")
        changes: list[tuple[str, dict[str, object], dict[str, object]]] = []
        if role is not None and role != user.role:
            changes.append(("role_changed", {"role": user.role}, {"role": role.value}))
            user.role = role.value
        if disabled is not None and disabled != user.disabled:
            changes.append(
                ("user_disabled" if disabled else "user_enabled", {"disabled": user.disabled}, {"disabled": disabled})
            )
            user.disabled = disabled
        if not changes:
            return user
        session.add(user)
        session.flush()
        admins = session.exec(
            select(func.count()).select_from(User).where(User.role == Role.admin, col(User.disabled).is_(False))
        ).one()
        if admins == 0:
            raise ReviewError(409, "last_admin", "That would leave no active admin; promote someone else first.")
        for action, before, after in changes:
            audit.record(
                session,
                actor=actor,
                action=action,
                target_type="user",
                target_id=user.username,
                before=before,
                after=after,
            )
        return user
