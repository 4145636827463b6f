"""Where ``run``'s settings come from (spec section 7): flags win over environment
variables, which win over the settings file, which wins over the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import build_parser, settings_from_args
from pipeline.errors import ConfigError
from pipeline.settings import load_settings


def test_flags_then_environment_then_file_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(
        "topic: from-file\ngroup: file-group\ndead_letter_topic: file-dlq\n"
        "kafka:\n  brokers: file:9092\nbatch:\n  max_age_s: 2.5\n"
    )
    monkeypatch.setenv("CDR_GROUP", "env-group")
    monkeypatch.setenv("CDR_KAFKA__BROKERS", "env:9092")
    args = build_parser().parse_args(["run", "--config", str(config), "--brokers", "flag:9092"])
    s = settings_from_args(args)
    assert s.kafka.brokers == "flag:9092"  # flag beats env and file
    assert s.group == "env-group"  # env beats file
    assert s.topic == "from-file"  # file beats default
    assert s.batch.max_age_s == 2.5
    assert s.batch.max_rows == 200_000  # default, nested partial update keeps the rest
    assert s.dead_letter_topic == "file-dlq"


def test_bad_values_are_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDR_BATCH__MAX_ROWS", "-5")
    with pytest.raises(ConfigError, match=r"batch\.max_rows"):
        load_settings()


def test_missing_settings_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="settings file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_the_config_flag_wins_over_cdr_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--config b.yaml`` is a flag: it beats ``CDR_CONFIG=a.yaml`` (before: a.yaml was
    read, while only b.yaml had been checked)."""
    env_file, flag_file = tmp_path / "a.yaml", tmp_path / "b.yaml"
    env_file.write_text("topic: from-env-file\n")
    flag_file.write_text("topic: from-flag-file\n")
    monkeypatch.setenv("CDR_CONFIG", str(env_file))
    assert load_settings().topic == "from-env-file"
    assert load_settings(flag_file).topic == "from-flag-file"


def test_the_log_level_flag_wins_for_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--log-level`` is a flag like the others: it beats ``CDR_LOG_LEVEL`` (before, run
    re-applied the setting over it)."""
    monkeypatch.setenv("CDR_LOG_LEVEL", "WARNING")
    assert settings_from_args(build_parser().parse_args(["run"])).log_level == "WARNING"
    args = build_parser().parse_args(["--log-level", "DEBUG", "run"])
    assert settings_from_args(args).log_level == "DEBUG"
