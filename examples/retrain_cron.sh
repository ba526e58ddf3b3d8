#!/usr/bin/env bash
# Retrain the router from telemetry and promote the new model only if it is estimated to be better.
# Running clients pick the new artifact up atomically; nothing restarts.
#
#   crontab:  17 3 * * *  cd /srv/app && PYTHON=/srv/app/.venv/bin/python PIXELROUTE_CONFIG=pixelroute.toml examples/retrain_cron.sh >> retrain.log 2>&1
#
# cron starts jobs with a bare PATH and no virtual environment, so the interpreter is named explicitly.
# Environment:
#   PYTHON             the interpreter of the environment pixelroute is installed in
#                      (default: .venv/bin/python in the current folder, else python3)
#   PIXELROUTE_CONFIG  a config naming the store (telemetry.store) and the artifact (router.model);
#                      or STORE + OUT instead
#   SINCE              the training window (default 30d)
set -euo pipefail

since="${SINCE:-30d}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import pixelroute' 2>/dev/null; then
  echo "$(date -Is) $PYTHON cannot import pixelroute: set PYTHON to the interpreter of the environment" \
       "it is installed in (e.g. PYTHON=/srv/app/.venv/bin/python)" >&2
  exit 1
fi
pixelroute=("$PYTHON" -m pixelroute)

if [[ -n "${PIXELROUTE_CONFIG:-}" ]]; then
  # the store and artifact directory come from the config file (one a line: a path may hold spaces)
  paths=$("$PYTHON" -c '
import sys
from pixelroute import PixelrouteError, load_settings
try:
    s = load_settings(sys.argv[1])
except PixelrouteError as exc:
    sys.exit(f"retrain_cron.sh: {exc}")
print(s.telemetry_url())
print(s.router.model or "router-model")' "$PIXELROUTE_CONFIG")
  { read -r store; read -r out; } <<<"$paths"
  config=(--config "$PIXELROUTE_CONFIG")
else
  store="${STORE:?set PIXELROUTE_CONFIG, or STORE and OUT}"
  out="${OUT:?set PIXELROUTE_CONFIG, or STORE and OUT}"
  config=()
fi

# exclusive: two overlapping runs would race on the artifact directory
exec 9>"${out%/}.lock"
flock -n 9 || { echo "$(date -Is) retrain already running; skipping"; exit 0; }

echo "$(date -Is) retraining on the last $since of telemetry -> $out"  # the store URL may hold a password
"${pixelroute[@]}" train --store "$store" --out "$out" --since "$since" --promote-if-better "${config[@]}"
"${pixelroute[@]}" stats --store "$store" --since 24h
echo "$(date -Is) done"
