"""Domain errors. Library code raises these (chained with ``from e``); the CLI and web
layers turn them into user-facing messages. Each carries a stable ``code`` that is stored
on failed calls and shown in exports."""

from __future__ import annotations


class QAError(Exception):
    """Base class of every error the library raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, path: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.path = path

    def __str__(self) -> str:
        base = super().__str__()
        return f"{self.path}: {base}" if self.path and self.path not in base else base


class ConfigError(QAError):
    code = "config"


class StorageError(QAError):
    code = "storage"


class IngestError(QAError):
    code = "ingest"


class ManifestError(IngestError):
    code = "manifest"


class AudioError(QAError):
    """A recording that cannot be used. ``code`` says why (``audio.empty``, ``audio.corrupt`` ...)."""

    code = "audio"


class ModelError(QAError):
    code = "model"


class TranscriptionError(QAError):
    code = "asr"


class RuleError(QAError):
    """An invalid rule file or pack; the message names the file and line."""

    code = "rules"


class ClassifierError(QAError):
    code = "classifier"


class ReviewError(QAError):
    code = "review"


class NotFound(QAError):
    code = "not_found"


class PermissionDenied(QAError):
    code = "forbidden"


class AuditError(QAError):
    code = "audit"


class ExportError(QAError):
    code = "export"


class LockError(QAError):
    code = "lock"
