"""Settings from the environment, else from ``./.env``; the tests read neither (README: Tests)."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from worker.cli import main
from worker.settings import get_settings


@pytest.fixture
def dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A developer's directory with a .env file in it."""
    (tmp_path / ".env").write_text(
        "# a comment\nBILLING_LOCK_TIMEOUT_MS=2500\nBILLING_BROKER_URL=redis://cache:6379/3\nOTHER=1\n"
    )
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    return tmp_path


def test_the_tests_never_read_a_developers_env_file(dotenv: Path) -> None:
    assert get_settings().lock_timeout_ms == 10_000


def test_settings_come_from_dotenv_and_the_environment_wins(
    dotenv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BILLING_ENV_FILE")  # as outside the tests
    monkeypatch.setenv("BILLING_BROKER_URL", "redis://broker:6379/0")
    settings = get_settings()
    assert (settings.lock_timeout_ms, settings.broker_url) == (2500, "redis://broker:6379/0")


def test_billing_env_file_names_another_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "billing.env").write_text("BILLING_MAX_RETRIES=3\n")
    monkeypatch.setenv("BILLING_ENV_FILE", str(tmp_path / "billing.env"))
    assert get_settings().max_retries == 3


def test_version_comes_from_the_installed_package() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"billing, version {version('billing-worker')}\n"
