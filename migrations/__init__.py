"""Alembic environment and versions (target metadata: service.domain.tables)."""
