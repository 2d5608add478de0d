"""configure_logging(settings): structlog over stdlib; JSON in production, console in development."""

from __future__ import annotations

import logging
import sys

import structlog

from service.settings import Settings

_REDACTED_KEYS = frozenset({"body", "description", "password", "secret", "token", "api_token", "authorization"})


def _drop_sensitive(_logger: object, _name: str, event_dict: dict[str, object]) -> dict[str, object]:
    """Never log ticket bodies or secrets, even if a caller passes them by mistake."""
    for key in list(event_dict):
        if key.lower() in _REDACTED_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(settings: Settings) -> None:
    """Route structlog and stdlib logging through one renderer at the configured level."""
    level = getattr(logging, settings.log.level.upper(), logging.INFO)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_sensitive,  # type: ignore[list-item]
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if settings.log.json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
