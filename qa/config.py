"""Settings: defaults, then an optional ``qa.toml``, then ``QA_*`` environment variables.

The TOML file may use sections: ``[asr] model = "base"`` is the setting ``asr_model``, and
its environment variable is ``QA_ASR_MODEL``. ``load_settings`` records where every value
came from so ``qa config show`` can say so.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from datetime import tzinfo
from pathlib import Path
from typing import Any

from .domain import CHANNEL_LAYOUTS
from .errors import ConfigError
from .signing import default_key_file
from .timeutil import zone

REPO_ROOT = Path(__file__).resolve().parent.parent
ASR_DEVICES = ("auto", "cpu", "cuda")
ASR_COMPUTE_TYPES = ("auto", "model", "bfloat16")


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "qa-speech")


# Domain words for asr_prompt or asr_hotwords, separated by spaces (a sentence-like prompt
# with ，/。 made base write stray digits where commas belong; BENCHMARKS.md)
FINANCE_HOTWORDS = "客服 工号 录音 理财 保本保息 年化利率 风险 投资须谨慎 征信 手续费 验证码 投诉"


@dataclass(frozen=True)
class Settings:
    # the call centre's zone: times without an offset, local days, displayed times, contact hours
    timezone: str = "Asia/Shanghai"
    data_dir: str = "var"
    database_url: str = ""  # empty: SQLite file ``<data_dir>/qa.db``
    cache_dir: str = field(default_factory=_default_cache_dir)
    channel_layout: str = "stereo-agent-left"
    max_duration_s: float = 4 * 3600.0
    # speech recognition
    asr_model: str = "base"
    asr_device: str = "auto"
    asr_batch_size: int = 16
    # beam search width at temperature 0; 1: greedy. Beam 5 without a prompt is the most
    # accurate policy measured (samples 14.1 %, real clips 40.1 %; BENCHMARKS.md, decoding policy)
    asr_beam_size: int = 5
    # hotword biasing in the decoder (space-separated words), beside or instead of asr_prompt
    asr_hotwords: str = ""
    asr_hotword_bonus: float = 1.5
    # none by default: a prompt makes Whisper write its words into speech that lacks them
    # (1.15 % of the characters on real clips, 14 points of CER; BENCHMARKS.md); FINANCE_HOTWORDS
    # is the list measured for finance calls
    asr_prompt: str = ""
    asr_threads: int = 0  # 0: torch default
    asr_pack_s: float = 30.0  # speech segments packed into windows of at most this; 0: one per window
    # auto: bfloat16 Linear layers on a CPU with native bfloat16, else the loaded model's dtype
    # (float16 on CUDA); model: the loaded dtype; bfloat16: CPU only
    asr_compute_type: str = "auto"
    # analysis
    rules_pack: str = str(REPO_ROOT / "rules" / "finance-zh")
    models_dir: str = str(REPO_ROOT / "models")
    # a classifier that is there but damaged or tampered with: stop the run, or fail each call
    classifier_errors: str = "stop"
    # a call whose manifest names no business line: take the topic classifier's, when its
    # probability reaches business_line_min_prob (rules scoped to a line then say it was inferred)
    infer_business_line: bool = True
    business_line_min_prob: float = 0.8
    # review routing
    tier1_sla_hours: float = 4.0
    tier2_sla_hours: float = 24.0
    tier3_sla_hours: float = 72.0
    complaint_risk_threshold: float = 0.8
    calibration_rate: float = 0.02
    calibration_seed: int = 20261123
    auto_assign: bool = False  # deal new review items round robin to the active inspectors
    claim_ttl_minutes: float = 30.0
    appeal_window_days: float = 7.0
    contact_hours: str = "08:00-21:00"
    # keys the hash under which phone numbers given as customer_ref are stored; empty: a
    # random key in <data_dir>/customer-ref.key
    customer_ref_key: str = ""
    # retention: days after a call's start its personal data is kept, per business line, e.g.
    # "collection=730, wealth=3650, default=1095" ("default": the other lines); empty: none
    retention_days: str = ""
    # web
    secret_key: str = ""
    # sha256 (hex) of an operator token: QA_OPERATOR_TOKEN set to the token authenticates --as
    # users of scheduled CLI scripts without a password
    operator_token_sha256: str = ""
    # the Ed25519 key that signs audit checkpoints and export manifests: outside data_dir
    audit_key_file: str = field(default_factory=default_key_file)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that is wrong."""
        zone(self.timezone)
        if self.channel_layout not in CHANNEL_LAYOUTS:
            raise ValueError(
                f"channel_layout must be one of {', '.join(CHANNEL_LAYOUTS)}, got {self.channel_layout!r}"
            )
        if self.asr_device not in ASR_DEVICES:
            raise ValueError(f"asr_device must be one of {', '.join(ASR_DEVICES)}, got {self.asr_device!r}")
        if self.asr_compute_type not in ASR_COMPUTE_TYPES:
            raise ValueError(
                f"asr_compute_type must be one of {', '.join(ASR_COMPUTE_TYPES)}, got {self.asr_compute_type!r}"
            )
        if self.operator_token_sha256 and (len(self.operator_token_sha256) != 64 or any(
                c not in "0123456789abcdefABCDEF" for c in self.operator_token_sha256)):
            raise ValueError("operator_token_sha256 must be 64 hex digits (sha256 of the token)")
        if self.classifier_errors not in ("stop", "fail_calls"):
            raise ValueError(f"classifier_errors must be stop or fail_calls, got {self.classifier_errors!r}")
        for name in ("max_duration_s", "tier1_sla_hours", "tier2_sla_hours", "tier3_sla_hours", "claim_ttl_minutes",
                     "appeal_window_days", "complaint_risk_threshold", "calibration_rate", "asr_pack_s",
                     "asr_hotword_bonus", "business_line_min_prob"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not 0.0 <= self.business_line_min_prob <= 1.0:
            raise ValueError(f"business_line_min_prob must be between 0 and 1, got {self.business_line_min_prob}")
        if self.max_duration_s <= 0:
            raise ValueError(f"max_duration_s must be positive, got {self.max_duration_s}")
        if self.appeal_window_days < 0:
            raise ValueError(f"appeal_window_days must not be negative, got {self.appeal_window_days}")
        if self.asr_threads < 0:
            raise ValueError(f"asr_threads must not be negative, got {self.asr_threads}")
        if self.secret_key and len(self.secret_key) < 16:
            raise ValueError("secret_key must have at least 16 characters (or be empty for a generated one)")
        if self.asr_batch_size < 1:
            raise ValueError(f"asr_batch_size must be at least 1, got {self.asr_batch_size}")
        if not 0.0 < self.asr_hotword_bonus <= 10.0:
            raise ValueError(f"asr_hotword_bonus must be between 0 and 10, got {self.asr_hotword_bonus}")
        if not 1 <= self.asr_beam_size <= 16:
            raise ValueError(f"asr_beam_size must be between 1 and 16, got {self.asr_beam_size}")
        if self.asr_pack_s != 0 and not 1.0 <= self.asr_pack_s <= 30.0:
            raise ValueError(f"asr_pack_s must be 0 (off) or between 1 and 30, got {self.asr_pack_s}")
        if not 0.0 <= self.calibration_rate <= 1.0:
            raise ValueError(f"calibration_rate must be between 0 and 1, got {self.calibration_rate}")
        if not 0.0 <= self.complaint_risk_threshold <= 1.0:
            raise ValueError(
                f"complaint_risk_threshold must be between 0 and 1, got {self.complaint_risk_threshold}"
            )
        for name in ("tier1_sla_hours", "tier2_sla_hours", "tier3_sla_hours", "claim_ttl_minutes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.customer_ref_key and len(self.customer_ref_key) < 16:
            raise ValueError("customer_ref_key must have at least 16 characters (or be empty for a key file)")
        self.retention_policy()
        start, sep, end = self.contact_hours.partition("-")
        if not sep or not all(_is_hhmm(t) for t in (start, end)):
            raise ValueError(f"contact_hours must look like 08:00-21:00, got {self.contact_hours!r}")

    @property
    def tz(self) -> tzinfo:
        return zone(self.timezone)

    def customer_key(self) -> bytes:
        """The key phone numbers given as customer_ref are hashed under (created on first use)."""
        from .ingest.customers import customer_key

        return customer_key(self.customer_ref_key, self.data_dir)

    def retention_policy(self) -> dict[str, int]:
        """``retention_days`` as business line -> days (``default`` for the lines not named)."""
        policy: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in self.retention_days.replace("，", ",").split(","))):
            line, sep, days = part.partition("=")
            line, days = line.strip(), days.strip()
            if not sep or not line or not days.isdigit() or not 1 <= int(days) <= 36500:
                raise ValueError(f"retention_days must look like 'collection=730, default=1095' (days from 1 to "
                                 f"36500), got {part!r}")
            if line in policy:
                raise ValueError(f"retention_days names {line!r} twice")
            policy[line] = int(days)
        return policy

    @property
    def database_in_data_dir(self) -> bool:
        """The SQLite file lies in ``data_dir`` (whose folder the system may create); a
        database_url pointing elsewhere must name a folder that exists, so a typo is an error."""
        url = self.effective_database_url
        if not url.startswith("sqlite:///"):
            return False
        return Path(url[len("sqlite:///"):]).parent.resolve() == Path(self.data_dir).resolve()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir) / 'qa.db'}"


def _is_hhmm(text: str) -> bool:
    hh, sep, mm = text.strip().partition(":")
    return bool(sep) and hh.isdigit() and mm.isdigit() and 0 <= int(hh) <= 24 and 0 <= int(mm) < 60


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    sources: dict[str, str]  # field name -> "default" | "qa.toml (path)" | "env QA_..."
    config_file: Path | None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _coerce(name: str, kind: type, raw: Any, origin: str) -> Any:
    """``raw`` (from TOML or the environment) as ``kind``, strictly: 1.9 is no integer, a list
    is no text, ``nan`` and ``inf`` are no numbers a setting can mean."""
    bad = ConfigError(f"{origin}: setting {name} expects {kind.__name__}, got {raw!r}")
    if isinstance(raw, (list, dict)):
        raise bad
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text not in _TRUE + _FALSE:
            raise bad
        return text in _TRUE
    if kind is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise bad
        try:
            return int(raw) if not isinstance(raw, str) else int(raw.strip())
        except (TypeError, ValueError) as e:
            raise bad from e
    if kind is float:
        try:
            value = float(raw)
        except (TypeError, ValueError) as e:
            raise bad from e
        if isinstance(raw, bool) or not math.isfinite(value):
            raise bad
        return value
    return str(raw)


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}".replace("-", "_")
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}_"))
        else:
            flat[name] = value
    return flat


def load_settings(config_path: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> LoadedSettings:
    """Build the effective settings. ``config_path`` (or ``QA_CONFIG``) names the TOML file;
    without one, ``./qa.toml`` is read when it exists."""
    env = os.environ if environ is None else environ
    types = {f.name: (f.type if isinstance(f.type, type) else eval(f.type)) for f in fields(Settings)}  # noqa: S307 - our own annotations
    values: dict[str, Any] = {}
    sources = {name: "default" for name in types}

    path_text = config_path or env.get("QA_CONFIG")
    path = Path(path_text) if path_text else Path("qa.toml")
    config_file: Path | None = None
    if path.exists():
        config_file = path
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from e
        for name, raw in _flatten(doc).items():
            if name not in types:
                raise ConfigError(f"{path}: unknown setting {name!r} (known: {', '.join(sorted(types))})")
            values[name] = _coerce(name, types[name], raw, str(path))
            sources[name] = f"qa.toml ({path})"
    elif path_text:
        raise ConfigError(f"config file {path} does not exist")

    for name, kind in types.items():
        var = f"QA_{name.upper()}"
        if var in env:
            values[name] = _coerce(name, kind, env[var], f"environment variable {var}")
            sources[name] = f"env {var}"

    settings = dataclasses.replace(Settings(), **values)
    try:
        settings.validate()
    except ValueError as e:
        raise ConfigError(f"invalid settings: {e}") from e
    return LoadedSettings(settings=settings, sources=sources, config_file=config_file)
