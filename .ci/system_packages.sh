#!/usr/bin/env bash
# The system programs some tests drive, installed from Debian's packages when they are missing and this
# user may install (root, or passwordless sudo). `make test` runs it, so a fresh machine with only
# Python 3.11 and make needs nothing installed by hand:
#   chromium       renders the scenario report headless (tests/test_scenarios_run.py)
#   tesseract-ocr  the typography scenario's OCR scorer (tests/test_scenarios_run.py)
# Under CI=true a program that is still missing fails here, loudly (the tests would fail on it too);
# elsewhere it is a note, and the tests that need it skip with the command that installs it.
set -uo pipefail

# "programs package": the programs on PATH the tests look for (any one will do), the Debian package that has them
WANTED=("chromium|chromium-browser chromium" "tesseract tesseract-ocr")

absent() {  # the packages none of whose programs is on PATH
  local pair programs package program
  for pair in "${WANTED[@]}"; do
    read -r programs package <<<"$pair"
    for program in ${programs//|/ }; do
      command -v "$program" >/dev/null 2>&1 && continue 2
    done
    echo "$package"
  done
}

mapfile -t missing < <(absent)
[ ${#missing[@]} -eq 0 ] && exit 0

as_root=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as_root=(sudo -n); else as_root=(none); fi
fi
if [ "${as_root[0]:-}" != none ] && command -v apt-get >/dev/null 2>&1; then
  echo "system packages: installing ${missing[*]} (apt-get)"
  for step in "update -qq" "install -y -qq ${missing[*]}"; do
    # shellcheck disable=SC2086 - $step is meant to split into apt-get's arguments
    if ! out=$("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get $step 2>&1); then
      echo "system packages: apt-get $step failed:" >&2
      tail -n 5 <<<"$out" >&2
    fi
  done
fi

mapfile -t still < <(absent)
[ ${#still[@]} -eq 0 ] && exit 0

if [ "${CI:-}" = true ]; then
  echo "system packages: error: ${still[*]} missing under CI=true and could not be installed" \
       "(needs apt-get as root or passwordless sudo): the tests that use them would fail" >&2
  exit 1
fi
echo "system packages: note: ${still[*]} not installed; the tests that need them skip." \
     "Install with: sudo apt-get install ${still[*]}" >&2
exit 0
