"""Settings from the environment (prefix ``BILLING_``), else from ``./.env`` (README: Running it
for real); defaults run everything in-process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.contracts import TaxIdData


@dataclass(frozen=True, slots=True)
class Issuer:
    """The account that issues the documents, as the documents show it."""

    name: str = ""
    address: dict[str, str] = field(default_factory=dict)
    tax_ids: list[tuple[str, str]] = field(default_factory=list)
    support_email: str = ""
    footer: str = ""
    logo_file: str = ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BILLING_", extra="ignore", env_file=".env", env_file_encoding="utf-8"
    )

    database_url: str = Field(
        default="sqlite:///billing.db",
        description="SQLAlchemy URL. PostgreSQL: postgresql+psycopg://user:pass@host/db",
    )
    broker_url: str = Field(
        default="memory://localhost/", description="Celery broker; memory:// runs in-process only"
    )
    database_pool_size: int = 5
    lock_timeout_ms: int = Field(
        default=10_000, description="PostgreSQL lock_timeout for billing transactions"
    )
    max_retries: int = Field(default=8, description="Retries of a task that hits infrastructure trouble")
    missing_reference_retries: int = Field(
        default=10,
        description="Retries (backoff up to 60 s each, a few minutes in all) of a task whose customer or"
        " invoice is not there yet: sent out of order, or its create message is being redelivered",
    )
    nothing_pending_retries: int = Field(
        default=5,
        ge=0,
        description="Retries (backoff up to 30 s each) of an invoice request that finds no pending items:"
        " its items may still be in the items queue, sent just before it",
    )
    visibility_timeout_s: int = Field(
        default=3600, description="Redis broker: redelivery after this long unacked"
    )
    unacked_restore_interval_s: int = Field(
        default=10,
        ge=1,
        description="Redis broker: how often a worker looks for unacked messages to redeliver",
    )
    broker_poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="Redis broker: how long an idle worker blocks before looking at its queues again."
        " Producers on this project's transport (BillingClient, beat, follow-ups) wake it at once;"
        " a message from any other producer waits at most this long",
    )
    task_events: bool = Field(
        default=False,
        description="Workers send task events from the start (celery worker -E). Off, a monitor turns"
        " them on when it connects (Flower does, every few seconds), so no worker pays for events"
        " nobody reads: about 1.2 ms of CPU per task, measured",
    )
    reconcile_interval_s: float = Field(default=30.0, gt=0, description="Beat: how often the reconciler runs")
    outbox_grace_s: int = Field(
        default=10, description="Reconciler: publish outbox rows still unpublished after this long"
    )
    outbox_republish_after_s: int = Field(
        default=300, description="Reconciler: publish again what was published but not done after this long"
    )
    stale_pending_after_s: int = Field(
        default=0,
        description="Reconciler: invoice (as drafts) pending items older than this; 0 = off."
        " Off by default: pending items normally wait for the caller's or a subscription's invoice.",
    )
    idempotency_key_retention_s: int = Field(
        default=2 * 86_400, ge=86_400, description="Idempotency keys are kept at least this long (>= 24 h)"
    )
    fate_ttl_s: int = Field(
        default=86_400,
        ge=60,
        description="Each request's fate (pending, succeeded with its ids, failed with the error) is kept"
        " this long on the broker's Redis for producers to read (BillingClient.fate, billing fate)",
    )
    redelivery_cap: int = Field(
        default=5, ge=1, description="A message redelivered this often without finishing is parked"
    )
    renew_interval_s: float = Field(
        default=60.0, gt=0, description="Beat: how often due subscriptions are asked to renew"
    )
    finalize_drafts_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="Beat: how often auto_advance drafts older than an hour are finalized",
    )
    mark_overdue_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="Beat: how often open send_invoice invoices past due are marked overdue",
    )
    upcoming_invoice_days: int = Field(
        default=3,
        ge=0,
        description="invoice.upcoming is emitted this many days before a subscription renews; 0 = off",
    )
    beat_chunk_size: int = Field(
        default=500, ge=1, description="Beat jobs read and publish due work in chunks of this many rows"
    )
    item_batch_size: int = Field(
        default=100, ge=1, description="Single-item messages a worker writes in one transaction, at most"
    )
    item_batch_interval_s: float = Field(
        default=0.05, gt=0, description="How long a worker waits to fill a batch of single-item messages"
    )
    invoice_batch_size: int = Field(
        default=10,
        ge=1,
        description="Invoice requests (billing.invoices.create) a worker makes in one transaction, at most",
    )
    invoice_batch_interval_s: float = Field(
        default=0.02, gt=0, description="How long a worker waits to fill a batch of invoice requests"
    )
    webhooks_allow_private: bool = Field(
        default=False,
        description="Webhook endpoints may point at loopback, link-local, private, multicast or reserved"
        " addresses (tests and local development only: a production worker must not reach into its own"
        " network on a caller's word). Checked when an endpoint is written and at every delivery",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="A delivery's HTTP request, connect to last byte, at most"
    )
    webhook_max_concurrency: int = Field(
        default=4, ge=1, description="Deliveries in flight to one endpoint at once, at most (all workers)"
    )
    webhook_retry_schedule_s: list[int] = Field(
        default=[
            60,
            300,
            1800,
            3600,
            3 * 3600,
            6 * 3600,
            12 * 3600,
            12 * 3600,
            12 * 3600,
            12 * 3600,
            12 * 3600,
        ],
        min_length=1,
        description="Seconds to wait after the 1st, 2nd, ... failed try of a delivery; after the last, the"
        " delivery is failed for that endpoint. The default tries for about 3 days (JSON list)",
    )
    webhook_disable_after_s: int = Field(
        default=5 * 86_400,
        ge=60,
        description="An endpoint whose every try failed for this long is disabled (and says why)",
    )
    webhook_claim_margin_s: int = Field(
        default=30,
        ge=1,
        description="A try is claimed for webhook_timeout_s plus this long; a worker killed mid-try lets the"
        " delivery be tried again once the claim expires",
    )
    webhook_history_retention_s: int = Field(
        default=30 * 86_400,
        ge=86_400,
        description="Finished webhook deliveries and their attempts are kept this long (the purge job)",
    )
    webhook_dispatch_interval_s: float = Field(
        default=5.0, gt=0, description="Beat: how often deliveries due for a retry are published"
    )
    webhook_redispatch_after_s: int = Field(
        default=120,
        ge=1,
        description="A due delivery published this long ago and still not tried is published again (its"
        " message was lost: Redis flushed or restarted without its data)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO",
        description="Level of the project's own loggers (billing.*) in workers and beat;"
        " Celery's --loglevel sets the rest",
    )
    log_format: Literal["json", "text"] = Field(
        default="text",
        description="json: one JSON object per line (the deploy files); text: for a terminal. Both mask"
        " passwords in URLs (worker.logs)",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Worker: serve its task metrics (Prometheus) on this port from its main process,"
        " for all its pool processes; 0 = off. The queue and database gauges are `billing exporter`'s",
    )
    metrics_address: str = Field(default="0.0.0.0", description="Worker: the address metrics_port binds")
    scrape_timeout_ms: int = Field(
        default=5_000,
        ge=100,
        description="billing exporter: statement_timeout of each scrape's database queries",
    )

    task_soft_time_limit_s: int = Field(
        default=240,
        ge=1,
        description="Celery task_soft_time_limit: a task still running after this long is interrupted"
        " (its transaction rolls back, the failure is recorded). Keep it above the statement timeout",
    )
    task_time_limit_s: int = Field(
        default=270,
        ge=1,
        description="Celery task_time_limit: the process of a task still running after this long is killed."
        " Every deploy file's stop grace (300 s) is above it, so a warm shutdown never cuts a task short",
    )
    statement_timeout_ms: int = Field(
        default=60_000,
        ge=0,
        description="PostgreSQL statement_timeout of the worker's connections; 0 = none (migrations run"
        " with 0: a long ALTER must not be cancelled halfway)",
    )
    heartbeat_file: str = Field(
        default="",
        description="Workers and beat touch this file every heartbeat_interval_s while their main loop runs;"
        " a liveness probe checks its age (billing health --heartbeat FILE). Empty: off",
    )
    heartbeat_interval_s: float = Field(
        default=15.0, gt=0, description="How often the heartbeat file is touched"
    )

    # The issuer: who sends the invoices and credit notes (worker/documents). Shown on every
    # document; none of it is required (a document without an issuer block still renders).
    issuer_name: str = Field(default="", max_length=256, description="Legal name on documents")
    issuer_address_line1: str = Field(default="", max_length=500)
    issuer_address_line2: str = Field(default="", max_length=500)
    issuer_address_postal_code: str = Field(default="", max_length=20)
    issuer_address_city: str = Field(default="", max_length=500)
    issuer_address_state: str = Field(default="", max_length=500)
    issuer_address_country: str = Field(
        default="", pattern=r"^([A-Z]{2})?$", description="ISO 3166-1 alpha-2, such as FR"
    )
    issuer_tax_ids: list[TaxIdData] = Field(
        default_factory=list,
        description='JSON list, e.g. [{"type": "eu_vat", "value": "FR40303265045"}]; shown in the header',
    )
    issuer_support_email: str = Field(default="", max_length=512, pattern=r"^([^@\s]+@[^@\s]+)?$")
    issuer_footer: str = Field(
        default="", max_length=5000, description="Printed at the end of every document"
    )
    issuer_logo_file: str = Field(
        default="", description="A PNG, JPEG or SVG file shown at the top of documents; empty: none"
    )
    smtp_url: str = Field(
        default="",
        description="Where document emails are sent: smtp://user:password@host:587 (STARTTLS; add"
        " ?starttls=false for a server without TLS) or smtps://…:465. Empty: written as .eml files"
        " to emails_dir",
    )
    email_from: str = Field(
        default="",
        max_length=512,
        description="The From of document emails; default: the issuer's support email",
    )
    emails_dir: str = Field(
        default="billing-emails", description="Where emails are written as .eml files when smtp_url is empty"
    )
    documents: bool = Field(
        default=True,
        description="Make the PDF of every finalized invoice and credit note, and email those of"
        " send_invoice invoices (queue billing.documents). Off: none is asked for (invoice_pdf and"
        " pdf stay null), and the billing path skips the document request's outbox row and publish",
    )
    documents_dir: str = Field(
        default="billing-documents",
        description="Where `billing demo` writes the PDFs it renders (relative to the working directory)",
    )

    @property
    def issuer(self) -> Issuer:
        address = {
            "line1": self.issuer_address_line1,
            "line2": self.issuer_address_line2,
            "postal_code": self.issuer_address_postal_code,
            "city": self.issuer_address_city,
            "state": self.issuer_address_state,
            "country": self.issuer_address_country,
        }
        return Issuer(
            name=self.issuer_name,
            address={key: value for key, value in address.items() if value},
            tax_ids=[(tax_id.type, tax_id.value) for tax_id in self.issuer_tax_ids],
            support_email=self.issuer_support_email,
            footer=self.issuer_footer,
            logo_file=self.issuer_logo_file,
        )

    @field_validator("issuer_logo_file")
    @classmethod
    def _logo_readable(cls, value: str) -> str:
        if value and not os.path.isfile(value):
            raise ValueError(f"no such file: {value}")
        if value and not value.lower().endswith((".png", ".jpg", ".jpeg", ".svg")):
            raise ValueError("must be a .png, .jpg, .jpeg or .svg file")
        return value

    @model_validator(mode="after")
    def _limits_in_order(self) -> Settings:
        """A statement is cancelled before the soft limit interrupts its task, and the soft limit
        comes before the hard one (README: Running it for real)."""
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("task_soft_time_limit_s must be below task_time_limit_s")
        if self.statement_timeout_ms >= self.task_soft_time_limit_s * 1000:
            raise ValueError("statement_timeout_ms must be below task_soft_time_limit_s")
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_name(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_name(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    # BILLING_ENV_FILE names another file, or none when empty (the tests: a developer's .env
    # must not reach them, nor the worker processes they start, which inherit the variable)
    env_file = os.environ.get("BILLING_ENV_FILE", ".env")
    return Settings(_env_file=env_file or None)
