"""The distribution: one wheel maps the four folders into the spendstream namespace,
and the light install (the producer client) brings none of the pipeline's weight."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("duckdb", "pyarrow", "pandas", "numpy", "great_expectations")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (out / "build.log").write_text(done.stdout + done.stderr)
    wheels = list(out.glob("spendstream-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_maps_top_level_folders_into_the_namespace(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "spendstream/cli.py",
        "spendstream/config.py",
        "spendstream/producers/event.py",
        "spendstream/stream/pricing.py",
        "spendstream/records.py",
        "spendstream/runtime/embedded.py",
        "spendstream/warehouse/__init__.py",
        "spendstream/alerts/__init__.py",
    ):
        assert module in names, module
    assert not any(n.startswith(("producers/", "stream/", "tests/")) for n in names)


def test_every_package_of_the_source_tree_is_in_the_wheel(wheel: Path) -> None:
    """pyproject.toml lists the packages by hand: a new subpackage left off is missing from
    an installed (not editable) spendstream."""
    names = set(zipfile.ZipFile(wheel).namelist())
    folders = {"spendstream": "spendstream"} | {
        d: f"spendstream/{d}" for d in ("producers", "stream", "warehouse", "alerts")
    }
    missing = [
        str(init)
        for folder, inside in folders.items()
        for init in (ROOT / folder).rglob("__init__.py")
        if f"{inside}/{init.relative_to(ROOT / folder).as_posix()}" not in names
    ]
    assert missing == []


def test_build_gives_no_license_warning_and_ships_the_license(wheel: Path) -> None:
    # setuptools >= 77 deprecates the table form of project.license with a loud warning on
    # every install; the SPDX string and license-files are the supported form.
    log = (wheel.parent / "build.log").read_text()
    assert "project.license" not in log, log[-3000:]
    assert "License-Expression: Apache-2.0" in _metadata(wheel)
    assert any(n.endswith("licenses/LICENSE") for n in zipfile.ZipFile(wheel).namelist())


def _metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return zf.read(name).decode()


def test_wheel_ships_every_source_module(wheel: Path) -> None:
    # packages is an explicit list in pyproject.toml: a new subpackage missing from it would
    # work in the editable install and break only for users of the wheel.
    names = set(zipfile.ZipFile(wheel).namelist())
    folders = {
        "spendstream": "spendstream",
        "producers": "spendstream/producers",
        "stream": "spendstream/stream",
        "warehouse": "spendstream/warehouse",
        "alerts": "spendstream/alerts",
    }
    missing = [
        f"{target}/{src.relative_to(ROOT / folder).as_posix()}"
        for folder, target in folders.items()
        for src in (ROOT / folder).rglob("*.py")
        if f"{target}/{src.relative_to(ROOT / folder).as_posix()}" not in names
    ]
    assert missing == []


def test_light_install_from_the_wheel_imports_producers_without_heavy_modules(
    wheel: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "light"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import sys, spendstream.producers as p\n"
        "from spendstream.producers import UsageEvent\n"
        f"heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]\n"
        "print(p.__file__)\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run(
        [str(py), "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert str(env_dir) in proc.stdout  # imported from the installed wheel, not the source tree
    assert "HEAVY []" in proc.stdout
    installed = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    for heavy in ("duckdb", "pyarrow", "great-expectations"):
        assert heavy not in installed
    # One Kafka client: confluent-kafka (spendstream.kafka); kafka-python is gone.
    assert "confluent-kafka==" in installed and "kafka-python" not in installed


def test_importing_producers_in_the_dev_install_loads_no_heavy_module() -> None:
    probe = (
        "import sys, spendstream.producers\n"
        f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
