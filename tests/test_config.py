from pathlib import Path

import pytest
from click.testing import CliRunner

from qa.cli import cli
from qa.config import Settings, load_settings
from qa.errors import ConfigError


def test_defaults_without_file_or_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loaded = load_settings(environ={})
    assert loaded.settings == Settings()
    assert set(loaded.sources.values()) == {"default"}
    assert loaded.settings.effective_database_url == "sqlite:///var/qa.db"


def test_toml_sections_then_env_override(tmp_path):
    cfg = tmp_path / "qa.toml"
    cfg.write_text('data_dir = "/srv/qa"\n[asr]\nmodel = "large-v3"\ndevice = "cuda"\n', encoding="utf-8")
    loaded = load_settings(cfg, environ={"QA_ASR_DEVICE": "cpu", "QA_ASR_BATCH_SIZE": "64"})
    s = loaded.settings
    assert (s.data_dir, s.asr_model, s.asr_device, s.asr_batch_size) == ("/srv/qa", "large-v3", "cpu", 64)
    assert loaded.sources["asr_model"] == f"qa.toml ({cfg})"
    assert loaded.sources["asr_device"] == "env QA_ASR_DEVICE"
    assert loaded.sources["channel_layout"] == "default"


@pytest.mark.parametrize(
    "toml, message",
    [
        ('chanel_layout = "mono"', "unknown setting 'chanel_layout'"),
        ('channel_layout = "quad"', "channel_layout must be one of"),
        ('[asr]\nbatch_size = "many"', "asr_batch_size expects int"),
        ('calibration_rate = 3', "calibration_rate must be between 0 and 1"),
        ('data_dir = ', "cannot read config file"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, toml, message):
    cfg = tmp_path / "qa.toml"
    cfg.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, environ={})


def test_missing_explicit_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_config_show_reports_sources(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("qa.toml").write_text('[asr]\nmodel = "small"\n', encoding="utf-8")
    monkeypatch.setenv("QA_DATABASE_URL", "postgresql://qa:secret@db.example/qa")
    result = CliRunner().invoke(cli, ["config", "show"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "small" in lines["asr_model"] and "qa.toml" in lines["asr_model"]
    assert "env QA_DATABASE_URL" in lines["database_url"]
    assert ":secret@" not in result.output and "qa:***@db.example" in result.output


def test_invalid_env_value_is_a_clean_cli_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QA_ASR_DEVICE", "tpu")
    result = CliRunner().invoke(cli, ["config", "show"])
    assert result.exit_code == 1
    assert "asr_device must be one of auto, cpu, cuda" in result.output


@pytest.mark.parametrize("toml,message", [
    ("max_duration_s = nan", "max_duration_s expects float"),
    ("[tier1]\nsla_hours = inf", "tier1_sla_hours expects float"),
    ("claim_ttl_minutes = nan", "claim_ttl_minutes expects float"),
    ("[asr]\nbatch_size = 1.9", "asr_batch_size expects int"),
    ('[asr]\nprompt = ["a", "b"]', "asr_prompt expects str"),
    ("appeal_window_days = -1", "appeal_window_days must not be negative"),
    ('secret_key = "short"', "secret_key must have at least 16"),
    ('timezone = "Mars/Olympus"', "IANA zone"),
    ("auto_assign = \"maybe\"", "auto_assign expects bool"),
])
def test_settings_are_strict(tmp_path, toml, message):
    cfg = tmp_path / "qa.toml"
    cfg.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, environ={})
