#!/usr/bin/env bash
# Wrapper for the nightly batch job, for cron or systemd.
#
#   scripts/nightly.sh [extra qa nightly options]
#
# Reads its settings from the environment (see docs/nightly.md): QA_SOURCE_DIR or QA_MANIFEST
# says what to ingest ("{day}" in them becomes the day), QA_DAY / QA_DAYS_AGO which day,
# QA_DATABASE_URL / QA_DATA_DIR where results go, QA_LOG_DIR where the JSON-lines log of
# each night is written. Exit status is that of `qa nightly`:
# 0 all calls done, 2 finished with some calls failed, 1 the run itself failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QA_BIN="${QA_BIN:-$here/.venv/bin/qa}"
QA_LOG_DIR="${QA_LOG_DIR:-${QA_DATA_DIR:-$here/var}/logs}"
QA_EXECUTOR="${QA_EXECUTOR:-local}"
# the day the recordings belong to: QA_DAY, or QA_DAYS_AGO days before today (default 1:
# a job after midnight works on yesterday's calls), today being the call centre's (the
# timezone setting), not this machine's: at 01:30 Beijing time a UTC host is still on the
# previous day
day="${QA_DAY:-$("$QA_BIN" config day --days-ago "${QA_DAYS_AGO:-1}")}"

# "{day}" in QA_SOURCE_DIR / QA_MANIFEST is replaced by the day, e.g. /data/recordings/{day}
if [[ -n "${QA_MANIFEST:-}" ]]; then
    input=(--manifest "${QA_MANIFEST//\{day\}/$day}")
elif [[ -n "${QA_SOURCE_DIR:-}" ]]; then
    input=(--source "${QA_SOURCE_DIR//\{day\}/$day}")
else
    echo "nightly.sh: set QA_SOURCE_DIR (a folder of recordings) or QA_MANIFEST (a manifest file)" >&2
    exit 1
fi

executor=(--executor "$QA_EXECUTOR")
if [[ -n "${QA_RAY_ADDRESS:-}" ]]; then
    executor+=(--address "$QA_RAY_ADDRESS")
fi

mkdir -p "$QA_LOG_DIR"
log="$QA_LOG_DIR/nightly-$day.jsonl"
cd "$here"
# JSON-lines log records go to the log file; the summary table goes to stdout (mailed by cron)
set +e
"$QA_BIN" nightly "${input[@]}" --date "$day" "${executor[@]}" --log-format json "$@" 2>>"$log"
status=$?
set -e
case $status in
    0) ;;
    2) echo "nightly.sh: finished, some calls failed (details above and in $log)" >&2 ;;
    *) echo "nightly.sh: the run failed with status $status; see $log" >&2 ;;
esac
exit $status
