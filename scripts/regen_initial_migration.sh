#!/usr/bin/env bash
# Development only, before the first release: rebuild the initial Alembic revision from
# qa/storage/models.py. After a release, add new revisions with `alembic revision --autogenerate`.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
rm -f qa/storage/migrations/versions/0001_initial.py
.venv/bin/python - "$tmp" <<'PY'
import sys
from alembic import command
from qa.storage import alembic_config
cfg = alembic_config(f"sqlite:///{sys.argv[1]}/empty.db")
command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
PY
mv qa/storage/migrations/versions/0001_initial_schema.py qa/storage/migrations/versions/0001_initial.py
rm -rf "$tmp"
echo "regenerated qa/storage/migrations/versions/0001_initial.py"
