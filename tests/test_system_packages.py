"""``make test`` installs the system programs some tests drive (``.ci/system_packages.sh``).

The script runs here with a PATH of its own: the few coreutils it calls, and stand-ins for
``id``, ``apt-get`` and the programs, so each case (present, installable, not installable, under
CI or not) is exercised without touching this machine's packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "system_packages.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def tool_dir(tmp_path: Path, *, uid: int, apt_installs: bool | None, present: tuple[str, ...] = ()) -> Path:
    """A PATH folder: the coreutils the script calls, an `id -u` answering ``uid``, the ``present``
    programs, and (unless ``apt_installs`` is None) an `apt-get` that logs its calls and, when
    ``apt_installs``, puts the programs of the packages it is asked for on this PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("env", "tail"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")

    def script(name: str, body: str) -> None:
        (bin_dir / name).write_text(f"#!{BASH}\n{textwrap.dedent(body)}")
        (bin_dir / name).chmod(0o755)

    script("id", f"echo {uid}\n")
    for program in present:
        script(program, "exit 0\n")
    if apt_installs is not None:
        install = ""
        if apt_installs:
            install = f"""
            for pkg in "$@"; do
              case $pkg in
                chromium) printf '#!{BASH}\\n' > "{bin_dir}/chromium"; chmod +x "{bin_dir}/chromium" ;;
                tesseract-ocr) printf '#!{BASH}\\n' > "{bin_dir}/tesseract"; chmod +x "{bin_dir}/tesseract" ;;
              esac
            done
            """
        script("apt-get", f'echo "$*" >> "{tmp_path}/apt.log"\n{install}\n')
    return bin_dir


def run(bin_dir: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(bin_dir), "HOME": str(bin_dir.parent)}
    if ci:
        env["CI"] = "true"
    return subprocess.run([BASH or "bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def apt_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "apt.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("ci", [True, False])
def test_nothing_happens_when_the_programs_are_there(tmp_path: Path, ci: bool) -> None:
    # chromium-browser (Ubuntu's name) counts as chromium
    bin_dir = tool_dir(tmp_path, uid=0, apt_installs=True, present=("chromium-browser", "tesseract"))
    done = run(bin_dir, ci)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert apt_calls(tmp_path) == []


def test_root_installs_the_missing_packages_with_apt_get_and_ci_passes(tmp_path: Path) -> None:
    bin_dir = tool_dir(tmp_path, uid=0, apt_installs=True, present=("chromium",))
    done = run(bin_dir, ci=True)
    assert done.returncode == 0, done.stderr
    assert "installing tesseract-ocr (apt-get)" in done.stdout
    assert apt_calls(tmp_path) == ["update -qq", "install -y -qq tesseract-ocr"]
    assert (bin_dir / "tesseract").exists()


def test_under_ci_a_package_that_cannot_be_installed_fails_naming_it(tmp_path: Path) -> None:
    bin_dir = tool_dir(tmp_path, uid=0, apt_installs=False)  # apt-get runs but installs nothing
    done = run(bin_dir, ci=True)
    assert done.returncode == 1
    assert "chromium tesseract-ocr missing under CI=true and could not be installed" in done.stderr
    assert apt_calls(tmp_path) == ["update -qq", "install -y -qq chromium tesseract-ocr"]


def test_outside_ci_a_user_who_may_not_install_gets_a_note_and_nothing_is_run(tmp_path: Path) -> None:
    bin_dir = tool_dir(tmp_path, uid=1000, apt_installs=True)  # no sudo on this PATH
    done = run(bin_dir, ci=False)
    assert done.returncode == 0
    assert "Install with: sudo apt-get install chromium tesseract-ocr" in done.stderr
    assert apt_calls(tmp_path) == []


def test_without_apt_get_ci_fails_and_elsewhere_the_tests_skip(tmp_path: Path) -> None:
    bin_dir = tool_dir(tmp_path, uid=0, apt_installs=None)
    assert run(bin_dir, ci=True).returncode == 1
    outside = run(bin_dir, ci=False)
    assert outside.returncode == 0 and "the tests that need them skip" in outside.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_runs_the_script_before_the_tests() -> None:
    # -n prints the commands without running them; the venv's stamp may be stale, that only adds lines
    done = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHON": "python3"})
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    script = lines.index("bash .ci/system_packages.sh")
    assert script < next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert "apt-get" not in (REPO / ".ci" / "run").read_text()  # CI installs nothing make test would not
