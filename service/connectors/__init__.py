"""Outbound connectors: one TicketWriter per ITSM system, built from its settings group."""

from __future__ import annotations

from service.domain.ports import TicketWriter
from service.settings import Settings

SOURCES = ("jira", "servicenow")


def make_writer(source: str, settings: Settings) -> TicketWriter:
    """The TicketWriter for `source` ("jira" or "servicenow"); ValueError when unknown or unconfigured."""
    # Imported here so a process that writes to one system never needs the other's module loaded.
    if source == "jira":
        from service.connectors.jira import JiraWriter

        return JiraWriter(settings.jira, category_label=_category_label(settings))
    if source == "servicenow":
        from service.connectors.servicenow import ServiceNowWriter

        return ServiceNowWriter(settings.servicenow, category_label=_category_label(settings))
    raise ValueError(f"no connector for source {source!r}; expected one of {SOURCES}")


def _category_label(settings: Settings) -> str:
    """The predicted field that holds the ticket's category/queue ("queue" unless configured)."""
    return str(getattr(settings, "category_label_field", "queue"))
