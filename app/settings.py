"""One settings object, read from `TUNEDECK_*` environment variables.

Everything that differs between a laptop and a GPU cluster lives here, so the
rest of the code never reads the environment itself.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEDECK_", extra="ignore")

    data_dir: Path = Field(Path("./var"), description="Datasets, models, checkpoints and artifacts")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite under the data dir")
    redis_url: str | None = Field(None, description="Broker and event streams; `tunedeck up` starts an embedded Redis when unset")
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: int = Field(200, description="Largest dataset upload accepted")
    worker_queues: str = Field(
        "auto,planning",
        description="Comma-separated Celery queues a worker consumes: auto = the memory classes of its "
        "accelerator (cpu, or gpu-16 … gpu-141), planning = traced plans",
    )
    event_stream_maxlen: int = Field(10_000, description="Events kept per job in its Redis stream")
    cancel_grace_seconds: float = Field(10.0, description="Time a cancelled trainer gets before it is killed")

    lease_seconds: float = Field(60.0, gt=0, description="A running job whose worker stops renewing this long is re-queued")
    reconcile_seconds: float = Field(15.0, gt=0, description="How often workers look for lost jobs")
    requeue_after_seconds: float = Field(600.0, gt=0, description="A queued job not picked up this long is enqueued again")
    max_attempts: int = Field(3, ge=1, le=100, description="Attempts before a job whose worker keeps dying fails")
    secret_key: str | None = Field(None, description="Signs session cookies; default: a random key kept in DATA_DIR/secret_key")
    session_hours: float = Field(12.0, gt=0, description="Hours a login session lasts")
    secure_cookies: bool = Field(False, description="Send the session cookie over HTTPS only (set behind TLS)")
    admin_email: str | None = Field(None, description="First admin, created at start if missing")
    admin_password: str | None = Field(None, description="Password of the first admin")
    admin_token: str | None = Field(None, description="API token seeded for the first admin (automation, tests)")

    webhook_retry_seconds: float = Field(10.0, gt=0, description="First pause before a failed webhook delivery "
                                                                 "is sent again (doubling each time, at most an hour)")
    webhook_max_attempts: int = Field(8, ge=1, le=100, description="Attempts before a webhook delivery is failed")

    serve: bool = Field(True, description="`tunedeck up` also runs the inference process (`tunedeck serve`)")
    serve_device: str = Field("auto", description="Where `tunedeck serve` runs models: auto (cuda if present), cpu, cuda")
    serve_max_adapters: int = Field(8, ge=1, le=1000, description="Adapters and standalone models one inference "
                                                                  "process keeps loaded (least recently used out)")
    serve_max_batch: int = Field(8, ge=1, le=256, description="Requests one forward pass of the inference process serves")
    serve_max_tokens: int = Field(1024, ge=1, le=1_000_000, description="Largest max_tokens a generation request may ask")
    serve_timeout_seconds: float = Field(120.0, gt=0, description="How long the API waits for an answer (queue included)")

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'tunedeck.db'}"

    @property
    def resolved_redis_url(self) -> str:
        return self.redis_url or "redis://127.0.0.1:6379/0"

    @property
    def models_dir(self) -> Path:
        return self.resolved_data_dir / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.resolved_data_dir / "datasets"

    @property
    def jobs_dir(self) -> Path:
        return self.resolved_data_dir / "jobs"


@lru_cache
def get_settings() -> Settings:
    return Settings()
