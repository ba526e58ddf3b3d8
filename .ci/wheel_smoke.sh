#!/usr/bin/env bash
# The wheel as a user gets it: built from this checkout, installed with no extras into a fresh virtual
# environment and used from an empty folder, where nothing of the checkout can stand in for it. Catches a
# package or data file left out of pyproject.toml's list, a top-level `sdk` or `router` in the wheel, and an
# import of an optional dependency on the plain path. Fails loudly; a few minutes (local wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rm -rf build/wheel
"$PYTHON" -m pip wheel --quiet --no-deps . -w build/wheel
wheel=$(ls build/wheel/pixelroute-*.whl)

"$PYTHON" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = sorted({n.split("/")[0] for n in names})
assert [t for t in tops if not t.endswith(".dist-info")] == ["pixelroute"], f"top-level entries: {tops}"
for needed in ("pixelroute/py.typed", "pixelroute/router/py.typed", "pixelroute/__main__.py",
               "pixelroute/contrib/django/templates/pixelroute/admin/", "pixelroute/router/templates/training_report.html"):
    assert any(n.startswith(needed) for n in names), f"the wheel lacks {needed}"
assert any(n.startswith("pixelroute/router/classifier/") and n.endswith((".json", ".txt")) for n in names), \
    "the wheel lacks the classifier's files"
print(f"wheel-smoke: {sys.argv[1]}: {len(names)} files, top level {tops}")
PY

"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet torch==2.13.0   # the CPU build on disk here, as in the Makefile
"$work/venv/bin/python" -m pip install --quiet "$repo/$wheel"

mkdir "$work/app"
cd "$work/app"
export PIXELROUTE_CACHE_DIR="$work/cache" HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
unset PYTHONPATH
"$work/venv/bin/python" - <<'PY'
import importlib.util, sys
import pixelroute, pixelroute.router
from pixelroute import SLA, AsyncClient, Client
for old in ("sdk", "router"):
    assert importlib.util.find_spec(old) is None, f"the wheel installed a top-level {old!r}"
heavy = sorted(m for m in ("torch", "diffusers", "lightgbm", "transformers") if m in sys.modules)
assert heavy == [], f"import pixelroute loaded {heavy}"
print("wheel-smoke: import pixelroute from", pixelroute.__file__)
PY
"$work/venv/bin/pixelroute" --help >/dev/null
version=$("$work/venv/bin/pixelroute" --version)
echo "wheel-smoke: $version"
[ "$version" = "pixelroute $("$work/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("pixelroute"))')" ]
"$work/venv/bin/pixelroute" generate "a cat" --out x.png >/dev/null
"$work/venv/bin/python" -c 'from PIL import Image; im = Image.open("x.png"); im.load(); print("wheel-smoke: generated", im.size)'
echo "wheel-smoke: ok"
