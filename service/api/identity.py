"""The service's own Jira account id (loop prevention): configured, or looked up once with /myself."""

from __future__ import annotations

import httpx
import structlog

from service.settings import Settings

log = structlog.get_logger(__name__)


def resolve_jira_account_id(settings: Settings) -> str | None:
    """ITSM_JIRA__ACCOUNT_ID, else GET /rest/api/3/myself with the bot's credentials; None when neither works."""
    jira = settings.jira
    if jira.account_id:
        return jira.account_id
    if not (jira.base_url and jira.email and jira.api_token):
        return None
    try:
        response = httpx.get(
            f"{jira.base_url.rstrip('/')}/rest/api/3/myself",
            auth=(jira.email, jira.api_token.get_secret_value()),
            headers={"Accept": "application/json"},
            timeout=jira.timeout_s,
        )
        response.raise_for_status()
        account = response.json().get("accountId")
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        # Without it our own comments could re-trigger triage; say so loudly but keep serving webhooks.
        log.warning("jira_account_lookup_failed", error=type(exc).__name__, hint="set ITSM_JIRA__ACCOUNT_ID")
        return None
    log.info("jira_account_resolved", account_id=account)
    return str(account) if account else None
