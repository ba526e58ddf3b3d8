#!/usr/bin/env bash
# Retrain the router from telemetry and promote the new model only if it is estimated to be better.
# Running clients pick the new artifact up atomically; nothing restarts.
#
#   crontab:  17 3 * * *  cd /srv/app && PIXELROUTE_CONFIG=pixelroute.toml examples/retrain_cron.sh >> retrain.log 2>&1
#
# Environment: PIXELROUTE_CONFIG (a config naming the store and router.model) or STORE + OUT;
# SINCE (default 30d) limits the training window; PIXELROUTE_BIN (default: pixelroute, else python -m pixelroute).
set -euo pipefail

since="${SINCE:-30d}"
if command -v "${PIXELROUTE_BIN:-pixelroute}" >/dev/null 2>&1; then
  pixelroute=("${PIXELROUTE_BIN:-pixelroute}")
else
  pixelroute=("${PYTHON:-python3}" -m pixelroute)
fi

if [[ -n "${PIXELROUTE_CONFIG:-}" ]]; then
  # the store and artifact directory come from the config file
  read -r store out < <("${PYTHON:-python3}" -c '
import sys
from pixelroute import load_settings
s = load_settings(sys.argv[1])
print(s.telemetry_url(), s.router.model or "router-model")' "$PIXELROUTE_CONFIG")
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
