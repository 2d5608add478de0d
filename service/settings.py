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
    fake_draft_latency_ms: int = Field(
        0, ge=0, description="Per-batch delay of the fake backend's drafting stage (tests of the two stages)."
    )
    draft_batch_size: int | None = Field(
        None, ge=1, le=512, description="Most tickets the draft worker drafts as one batch; batch_size when unset."
    )
    draft_batch_wait_ms: int = Field(
        100, ge=0, description="How long the draft worker waits to fill a batch of pending drafts."
    )
    static_drafting: bool | None = Field(
        None,
        description="Static KV cache with compiled shapes for drafting; unset: on for CUDA, off on CPU.",
    )
    draft_batch_buckets: list[int] = Field(
        default_factory=lambda: [8, 32, 64],
        min_length=1,
        description="Batch sizes a static drafting batch is padded to (each compiled once at worker start).",
    )
    draft_prompt_buckets: list[int] = Field(
        default_factory=lambda: [384, 768],
        min_length=1,
        description="Prompt lengths in tokens a static drafting batch is padded to (each compiled at start).",
    )
    offline: bool = Field(
        True,
        description="Never download while loading: a hub id must be in the local Hugging Face cache (HF_HOME).",
    )
    hub_kernels: bool = Field(
        False, description="Let transformers fetch 'hub kernels' (needs the Hub or a kernels cache); off air-gapped."
    )


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
    draft_time_limit_s: int = Field(600, ge=1, description="Hard limit of one draft task (a drafting batch).")
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


class KnowledgeSettings(BaseModel):
    """Knowledge-base sync (ServiceNow Knowledge, Confluence Cloud) and evidence retrieval for drafts."""

    sync_interval_s: int = Field(
        900, ge=0, description="How often the worker's beat syncs the configured knowledge bases (0 = only by CLI)."
    )
    servicenow_enabled: bool = Field(
        False,
        description="Sync published kb_knowledge articles with the ITSM_SERVICENOW__ instance and credentials.",
    )
    servicenow_query: str = Field(
        "",
        max_length=2000,
        description="Extra encoded query ANDed to every kb_knowledge read, e.g. kb_knowledge_base=<sys_id>.",
    )
    confluence_url: str | None = Field(
        None, description="https://<site>.atlassian.net (Confluence Cloud; the /wiki prefix is added)."
    )
    confluence_email: str | None = Field(None, description="Confluence account e-mail; ITSM_JIRA__EMAIL when unset.")
    confluence_api_token: SecretStr | None = Field(
        None, description="Confluence API token; ITSM_JIRA__API_TOKEN when unset."
    )
    confluence_spaces: list[str] = Field(
        default_factory=list, description="Keys of the Confluence spaces whose current pages are synced."
    )
    confluence_languages: dict[str, str] = Field(
        default_factory=dict, description="Space key -> language of its pages (ISO 639-1); others use `language`."
    )
    language: str = Field("en", description="Language of articles that do not name one (ISO 639-1).")
    timeout_s: float = Field(10.0, gt=0, description="Per-request timeout towards the knowledge bases.")
    max_retries: int = Field(5, ge=0, le=20, description="Retries of a 429 / 5xx / lost connection during a sync.")
    backoff_base_s: float = Field(1.0, ge=0, description="First backoff after a failed knowledge-base request.")
    backoff_cap_s: float = Field(
        60.0, ge=0, description="Longest wait between tries; a longer Retry-After ends the sync (the next one resumes)."
    )
    max_delete_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A sync that would remove more than this share of a source's articles removes none and "
        "reports it (an emptied or unreadable listing must not wipe the knowledge base).",
    )
    min_score: float = Field(
        4.0,
        ge=0,
        description="BM25 score from which a passage counts as evidence for a draft; below it nothing is cited.",
    )
    evidence_passages: int = Field(3, ge=0, le=20, description="Most passages given to a draft as evidence.")
    evidence_token_budget: int = Field(
        600, ge=0, description="Most tokens (about 4 characters each) of evidence quoted into a draft's prompt."
    )


class PrivacySettings(BaseModel):
    """What is kept at rest and for how long (README: "What is kept, for how long, and how to erase it")."""

    payload_keys: SecretStr | None = Field(
        None,
        description="Comma-separated Fernet keys for raw webhook payloads at rest (redacted, then encrypted): the "
        "first encrypts, every one decrypts (rotation: `itsm-triage payloads rekey`). "
        "Unset: raw payloads are not kept.",
    )
    payload_retention_days: int = Field(
        30, ge=1, description="Kept raw payloads are erased this many days after they were received."
    )
    closed_text_retention_days: int = Field(
        365,
        ge=0,
        description="Texts (subject, body, drafts, replies, reporter) of tickets closed longer than this are erased "
        "and forgotten by the ticket memory; 0: kept.",
    )
    closed_statuses: list[str] = Field(
        default_factory=lambda: ["done", "closed", "resolved", "canceled", "cancelled", "6", "7", "8"],
        description="Ticket statuses that count as closed (case-insensitive; ServiceNow states 6, 7, 8).",
    )
    retention_interval_s: int = Field(
        3600, ge=60, description="How often the worker that runs the sweeper (--beat) applies the retention."
    )


class LearningSettings(BaseModel):
    """The learning loop: retraining on reviewed tickets, the gate, shadowing, promotion and rollback (README)."""

    schedule: str | None = Field(
        None,
        description="Crontab (minute hour day month weekday, UTC) of automatic retrains, run by a worker consuming "
        "the `learn` queue, e.g. '0 3 * * 6'; unset: only `itsm-triage retrain`.",
    )
    time_budget_min: float = Field(
        30.0,
        gt=0,
        le=24 * 60,
        description="Minutes a retrain may take: training (features and validation included), then the gate.",
    )
    max_train_rows: int = Field(
        3000, ge=0, description="Most tickets the LLM trains on per retrain (reviewed ones always; 0: all)."
    )
    review_weight: int = Field(
        3,
        ge=1,
        le=20,
        description="How many times a reviewed ticket counts in the LLM's training rows: agents' recent "
        "corrections outweigh older history.",
    )
    warm_start: bool = Field(
        True,
        description="A retrain starts from the live adapter's weights instead of from scratch (a new label's head row "
        "is imprinted from its tickets): within a short budget it refines what the live adapter learnt rather than "
        "relearning it.",
    )
    min_reviewed: int = Field(
        50, ge=1, description="Fewest reviewed tickets (since the live adapter's data) a retrain needs."
    )
    holdout: int = Field(
        200,
        ge=10,
        description="The most recent reviewed tickets held out of training for the gate (at most a third of them).",
    )
    gate_confidence: float = Field(
        0.95,
        ge=0.5,
        le=0.999,
        description="Confidence (one-sided, paired bootstrap) with which a candidate must beat the live adapter.",
    )
    gate_min_margin: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="Macro-F1 the candidate's lower confidence bound must exceed the live adapter's by, in at "
        "least one field (0: better at all).",
    )
    gate_max_ece_increase: float = Field(
        0.02,
        ge=0,
        le=1,
        description="A candidate whose ECE is higher than the live adapter's by more than this (at the gate's "
        "confidence) is refused.",
    )
    gate_min_holdout: int = Field(20, ge=5, description="Fewest held-out tickets the gate decides on.")
    gate_reply_sample: int = Field(
        50, ge=0, description="Held-out tickets with a sent reply whose suggestions the gate compares (0: none)."
    )
    on_gate_pass: Literal["shadow", "promote", "candidate"] = Field(
        "shadow",
        description="What a candidate that passes the gate becomes: 'shadow' (predicts beside the live one until "
        "agents' verdicts decide), 'promote' (live at once) or 'candidate' (an admin decides).",
    )
    shadow_decision: Literal["auto", "admin"] = Field(
        "auto",
        description="'auto': promote or retire a shadow adapter on agents' final values; 'admin': only show the "
        "comparison.",
    )
    shadow_min_reviewed: int = Field(
        100, ge=10, description="Reviewed tickets with a shadow prediction before the shadow comparison decides."
    )
    shadow_max_reviewed: int = Field(
        1000,
        ge=10,
        description="Reviewed shadow tickets after which a shadow adapter that is not better is retired.",
    )
    auto_rollback: bool = Field(
        True,
        description="Roll the live adapter back when its precision on reviewed tickets falls significantly below "
        "its predecessor's.",
    )
    rollback_window: int = Field(
        200, ge=10, description="Reviewed tickets per adapter in the rolling precision window of the rollback check."
    )
    rollback_min_reviewed: int = Field(
        50, ge=10, description="Reviewed tickets of the live adapter before the rollback check judges it."
    )
    rollback_confidence: float = Field(
        0.99,
        ge=0.5,
        le=0.9999,
        description="Confidence (one-sided) that the live adapter's precision is below its predecessor's.",
    )
    check_interval_s: int = Field(
        300, ge=0, description="How often the worker's beat runs the shadow comparison and the rollback check (0: off)."
    )
    adapter_sync_s: float = Field(
        30.0,
        ge=0,
        description="How often a triage or draft worker looks for a new live or shadow adapter (loaded between "
        "batches, no restart); 0: the adapter it started with.",
    )
    store_dir: Path | None = Field(
        None,
        description="Directory (e.g. a mounted bucket) for adapter files; unset: they are stored in the database.",
    )
    cache_dir: Path | None = Field(
        None, description="Where a process keeps unpacked adapters, by their SHA-256; unset: ITSM_VAR_DIR/adapters."
    )

    @model_validator(mode="after")
    def _schedule_is_a_crontab(self) -> LearningSettings:
        """Five crontab fields, so a typo fails at start-up and not at the first beat."""
        if self.schedule is not None and len(self.schedule.split()) != 5:
            raise ValueError("learning.schedule must be a crontab: minute hour day-of-month month day-of-week")
        return self


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
    kb: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    learning: LearningSettings = Field(default_factory=LearningSettings)
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
