"""The one Settings object: every knob of the service, read from ITSM_* environment variables.

Built once per process at a composition root (`Settings()`), then passed down. Nothing reads the environment
at import time. Nested groups use `__` as delimiter: `ITSM_JIRA__WEBHOOK_SECRET`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_VAR_DIR = Path("var")


class AutomationMode(StrEnum):
    """How the pipeline treats one predicted field."""

    auto = "auto"  # write to the ITSM tool when confidence >= threshold, else suggest
    suggest = "suggest"  # only mention in the internal note
    shadow = "shadow"  # store only; write nothing (measure precision on live traffic first)


class FieldPolicy(BaseModel):
    """Automation level and confidence threshold for one predicted field."""

    mode: AutomationMode = AutomationMode.suggest
    threshold: float = Field(0.9, ge=0.0, le=1.0)


class JiraSettings(BaseModel):
    """Jira Cloud / JSM: inbound webhook secret and outbound REST credentials."""

    webhook_secret: SecretStr | None = Field(None, description="Secret of the Jira admin webhook (X-Hub-Signature).")
    webhook_secret_next: SecretStr | None = Field(None, description="Next secret, accepted too during rotation.")
    account_id: str | None = Field(
        None,
        description="The service's own Jira account id (loop prevention); looked up with /myself when unset.",
    )
    base_url: str | None = Field(None, description="https://<site>.atlassian.net")
    email: str | None = Field(None, description="Bot account e-mail for basic auth.")
    api_token: SecretStr | None = Field(None, description="Bot account API token.")
    category_field: str = Field(
        "components",
        description="Where a queue/category label is written: 'components', 'labels' or customfield_NNNNN.",
    )
    priority_map: dict[str, str] = Field(
        default_factory=lambda: {"P1": "Highest", "P2": "High", "P3": "Medium", "P4": "Low", "P5": "Lowest"},
        description="Priority label -> Jira priority name.",
    )
    category_map: dict[str, str] = Field(
        default_factory=dict,
        description="Queue/category label -> Jira value; unmapped labels use the label itself.",
    )
    internal_comments: Literal["servicedeskapi", "property"] = Field(
        "servicedeskapi",
        description="How internal notes are posted: JSM servicedeskapi or the sd.public.comment property.",
    )
    timeout_s: float = Field(5.0, gt=0, description="Per-request timeout towards Jira.")


class ServiceNowSettings(BaseModel):
    """ServiceNow: inbound webhook secret (our contract) and Table API credentials."""

    webhook_secret: SecretStr | None = Field(None, description="Raw shared secret of the Business Rule signer.")
    webhook_secret_next: SecretStr | None = Field(None, description="Next secret, accepted too during rotation.")
    replay_window_s: int = Field(300, ge=1, description="Reject deliveries whose X-SN-Timestamp is further off.")
    instance_url: str | None = Field(None, description="https://<instance>.service-now.com")
    username: str | None = Field(None, description="Integration user.")
    password: SecretStr | None = Field(None, description="Integration user's password.")
    oauth_client_id: str | None = Field(None, description="Optional OAuth client id (password grant).")
    oauth_client_secret: SecretStr | None = Field(None, description="Optional OAuth client secret.")
    integration_user: str = Field("itsm.triage.bot", description="sys_updated_by of our own writes (loop prevention).")
    priority_map: dict[str, tuple[str, str]] = Field(
        default_factory=lambda: {
            "P1": ("1", "1"),
            "P2": ("1", "2"),
            "P3": ("2", "2"),
            "P4": ("3", "2"),
            "P5": ("3", "3"),
        },
        description="Priority label -> (impact, urgency). Priority itself is computed by ServiceNow.",
    )
    category_map: dict[str, str] = Field(default_factory=dict, description="Queue/category label -> SN category.")
    assignment_group_map: dict[str, str] = Field(default_factory=dict, description="Queue label -> group sys_id.")
    timeout_s: float = Field(5.0, gt=0, description="Per-request timeout towards ServiceNow.")


class ModelSettings(BaseModel):
    """The triage model: base LLM, LoRA adapter, device and batching."""

    base: str = Field(
        "bundled:smollm2-135m-instruct",
        description="Hugging Face causal-LM id or local dir; 'bundled:smollm2-135m-instruct' is the shipped default.",
    )
    adapter: str | None = Field(None, description="LoRA adapter directory; the shipped default adapter when unset.")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: str = Field(
        "auto", description="'auto' (bf16 on CUDA and on CPUs with bf16 support, else fp32), 'float32', 'bfloat16'."
    )
    cache_dir: Path = Field(DEFAULT_VAR_DIR / "models", description="Converted base weights and downloads.")
    batch_size: int = Field(16, ge=1, le=512, description="Most tickets the triage worker runs as one batch.")
    batch_wait_ms: int = Field(200, ge=0, description="How long the triage worker waits to fill a batch.")
    max_new_tokens: int = Field(160, ge=8, le=2048, description="Bound on a drafted reply's length in tokens.")
    max_input_chars: int = Field(8000, ge=256, description="Ticket text beyond this is cut (flagged truncated).")
    draft_replies: bool = Field(True, description="Draft a reply per ticket (off: classify only).")
    reply_mode: Literal["retrieve", "generate"] = Field(
        "retrieve",
        description="'retrieve': the adapter's past reply to a similar ticket (same language) when one exists, "
        "else an LLM draft; 'generate': always an LLM draft, shown that past reply as an example.",
    )
    reply_min_similarity: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Similarity (mean of word and character TF-IDF cosines) from which a past ticket counts as "
        "similar (ticket memory).",
    )
    memory_sync_s: float = Field(
        60.0,
        ge=0,
        description="How often a triage worker adds newly reviewed tickets (corrected labels, sent replies) to the "
        "ticket memory, so they vote and can be suggested at once; 0: only retraining learns from reviews.",
    )
    memory_max_rows: int = Field(
        50000,
        ge=0,
        description="Most tickets the ticket memory holds as reviewed tickets are added (the least recently added go "
        "first, training tickets before reviews); 0: no bound.",
    )
    backend: Literal["hf", "fake"] = Field(
        "hf", description="'hf' runs the LLM; 'fake' is a deterministic test double for plumbing tests only."
    )
    fake_latency_ms: int = Field(0, ge=0, description="Per-batch delay of the fake backend (reliability tests).")


class ApiSettings(BaseModel):
    """The HTTP edge: limits and development switches."""

    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Webhook bodies above this get 413.")
    request_timeout_s: float = Field(5.0, gt=0, description="Deadline for a webhook ack; past it the answer is 503.")
    dev_mode: bool = Field(False, description="Allow `serve` without webhook secrets (never in production).")
    migrate_on_start: bool = Field(True, description="Apply pending migrations when serve/run start.")
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="API processes sharing the port (PostgreSQL only; on Kubernetes scale pods instead).",
    )


class WorkerSettings(BaseModel):
    """Celery workers, leases and the sweeper."""

    task_time_limit_s: int = Field(600, ge=1, description="Hard limit of one task (a triage batch).")
    visibility_timeout_s: int = Field(3600, ge=1, description="Redis visibility timeout; must exceed the time limit.")
    prefetch_multiplier: int = Field(1, ge=1, description="Messages reserved per worker process.")
    lease_s: int = Field(900, ge=1, description="Work claimed longer ago than this counts as stuck.")
    sweep_interval_s: int = Field(30, ge=1, description="How often the sweeper looks for stuck work.")
    max_attempts: int = Field(3, ge=1, description="Attempts before an event or delivery is dead-lettered.")
    delivery_max_retries: int = Field(6, ge=0, description="Retries of a transient ITSM failure.")
    delivery_backoff_base_s: float = Field(2.0, ge=0, description="First backoff of a failed delivery.")
    delivery_backoff_cap_s: float = Field(600.0, ge=0, description="Longest backoff of a failed delivery.")
    concurrency: int = Field(1, ge=1, description="Processes per worker (one per GPU for triage).")
    metrics_port: int = Field(0, ge=0, le=65535, description="Worker Prometheus /metrics port (0 = off).")
    stuck_grace_s: int = Field(
        60, ge=1, description="Events received/queued longer than this are re-enqueued by the sweeper."
    )
    stall_timeout_s: int = Field(
        60,
        ge=0,
        description="Reconnect a worker that took no message this long while its queues had work (0 = off).",
    )


class ReviewSettings(BaseModel):
    """The agents' review UI and its JSON API."""

    session_secret: SecretStr | None = Field(None, description="Signs session cookies; generated under var/ in dev.")
    cookie_secure: bool = Field(True, description="Send the session cookie over HTTPS only.")
    session_max_age_s: int = Field(8 * 3600, ge=60, description="Session lifetime.")
    oidc_issuer: str | None = Field(None, description="Optional OIDC issuer URL for single sign-on.")
    oidc_client_id: str | None = Field(None, description="OIDC client id.")
    oidc_client_secret: SecretStr | None = Field(None, description="OIDC client secret.")


class LogSettings(BaseModel):
    """Logging."""

    level: str = Field("INFO", description="Root log level.")
    json_logs: bool = Field(True, description="JSON lines (production); False prints for humans.")


class Settings(BaseSettings):
    """All configuration of the service; see the README's table (generated from this class)."""

    model_config = SettingsConfigDict(
        env_prefix="ITSM_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    database_url: str = Field(
        f"sqlite:///{DEFAULT_VAR_DIR / 'itsm.db'}", description="SQLAlchemy URL; PostgreSQL in production."
    )
    broker_url: str = Field(
        f"sqla+sqlite:///{DEFAULT_VAR_DIR / 'broker.db'}",
        description="Celery broker; the embedded SQLite broker by default, redis://... in production.",
    )
    var_dir: Path = Field(DEFAULT_VAR_DIR, description="Where development state lives (secrets, SQLite files).")
    category_label_field: str = Field(
        "queue",
        description="The predicted field that holds the ticket's category/queue (mapped to each ITSM tool).",
    )
    policy: dict[str, FieldPolicy] = Field(
        default_factory=dict,
        description="Per predicted field: {mode: auto|suggest|shadow, threshold}. Fields not listed: suggest.",
    )
    jira: JiraSettings = Field(default_factory=JiraSettings)
    servicenow: ServiceNowSettings = Field(default_factory=ServiceNowSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @model_validator(mode="after")
    def _visibility_exceeds_time_limit(self) -> Settings:
        """A task outliving the broker's visibility timeout would run twice (RELIABILITY T9)."""
        if self.broker_url.startswith("redis") and self.worker.visibility_timeout_s <= self.worker.task_time_limit_s:
            raise ValueError("worker.visibility_timeout_s must exceed worker.task_time_limit_s")
        return self

    def field_policy(self, field: str) -> FieldPolicy:
        """The automation policy of one predicted field (suggest when unconfigured)."""
        return self.policy.get(field, FieldPolicy())
