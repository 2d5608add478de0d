"""create_app(settings): the API process (webhooks, health, metrics, review UI). Never imports torch."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from celery import Celery
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine

from service import __version__
from service.api.identity import resolve_jira_account_id
from service.api.metrics import ApiMetrics, multiprocess_dir
from service.api.middleware import RequestIdMiddleware
from service.api.problems import install_problem_handlers
from service.api.rejections import RejectionLog
from service.api.relay import EnqueueRelay
from service.api.routes import health, webhooks
from service.crypto import PayloadCipher
from service.db import make_engine
from service.domain.ports import WebhookParser
from service.knowledge.metrics import KnowledgeCollector
from service.queue import declare_queues, make_celery
from service.settings import Settings
from service.webhooks.jira import JiraWebhookParser
from service.webhooks.servicenow import ServiceNowWebhookParser

log = structlog.get_logger(__name__)


def make_parsers(settings: Settings) -> dict[str, WebhookParser]:
    """One webhook parser per supported source, keyed by the URL segment."""
    return {"jira": JiraWebhookParser(settings), "servicenow": ServiceNowWebhookParser(settings)}


def create_app(settings: Settings, *, engine: Engine | None = None, celery: Celery | None = None) -> FastAPI:
    """Build the FastAPI application; dependencies live on app.state (no import-time singletons)."""
    own_engine = engine is None
    engine = engine or make_engine(settings)
    celery = celery or make_celery(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(declare_queues, celery)  # before the first publish races a worker's declaration
        app.state.relay.start()
        jira = app.state.parsers["jira"]
        if isinstance(jira, JiraWebhookParser) and not settings.jira.account_id:
            jira.set_own_account(await run_in_threadpool(resolve_jira_account_id, settings))
        log.info("api_started", version=__version__, sources=sorted(app.state.parsers))
        yield
        app.state.relay.stop()
        if multiprocess_dir() is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # its live gauges stop counting
        if own_engine:
            engine.dispose()

    app = FastAPI(
        title="itsm-triage",
        version=__version__,
        lifespan=lifespan,
        description="Webhook receiver, review UI and JSON API of the ITSM triage service.",
    )
    metrics = ApiMetrics()
    metrics.add_collector(KnowledgeCollector(engine))
    app.state.settings = settings
    app.state.engine = engine
    app.state.celery = celery
    app.state.metrics = metrics
    app.state.relay = EnqueueRelay(celery, engine, metrics)
    app.state.parsers = make_parsers(settings)
    app.state.payload_cipher = PayloadCipher.from_settings(settings)  # a bad key fails here, at start-up
    app.state.rejections = RejectionLog()
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(webhooks.router)
    _mount_review(app, settings)
    app.add_middleware(RequestIdMiddleware)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `serve` with several processes: each one reads its settings from the ITSM_* environment."""
    from service.logging import configure_logging

    settings = Settings()
    configure_logging(settings)
    return create_app(settings)


def _mount_review(app: FastAPI, settings: Settings) -> None:
    """The agents' review UI and JSON API share this process."""
    from service import review

    mount = getattr(review, "mount", None)
    if mount is not None:
        mount(app, settings)
