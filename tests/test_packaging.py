"""Packaging: the wheel holds one package, conv1d_transpose, with the stages inside it."""
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q",
                    "-w", str(out)], check=True, capture_output=True)
    (path,) = out.glob("conv1d_transpose-*.whl")
    return path


def stage_packages():
    """Every folder with an __init__.py under the three stage folders, as module names."""
    names = set()
    for stage in ("graph", "compile", "runtime"):
        for init in (ROOT / stage).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT).parts
            names.add(".".join(("conv1d_transpose",) + relative))
    return names


def test_wheel_has_one_top_level_package_with_every_stage(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"conv1d_transpose", "conv1d_transpose-0.1.0.dist-info"}
    packages = {os.path.dirname(n).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert stage_packages() <= packages, stage_packages() - packages
    assert "conv1d_transpose/targets.yaml" in names and "conv1d_transpose/workloads.yaml" in names
    # The shipped tuning records travel with the compiler that reads them.
    assert "conv1d_transpose/compile/tuning_records.json" in names


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_clean_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True,
                   capture_output=True)
    script = (
        "import numpy as np, conv1d_transpose as ct, importlib.util, sys\n"
        "assert ct.__file__.startswith(sys.prefix), ct.__file__\n"
        "for name in ('graph', 'compile', 'runtime'):\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        "x = np.ones((1, 4, 2), np.float32); f = np.ones((3, 5, 2), np.float32)\n"
        "y = ct.conv1d_transpose(x, f, [1, 8, 5], 2, backend='onnxruntime')\n"
        "print(y[0, :, 0].tolist())\n"
    )
    result = subprocess.run([str(python), "-c", script], cwd=tmp_path, check=True,
                            capture_output=True, text=True)
    assert result.stdout.strip() == str([2.0, 2.0, 4.0, 2.0, 4.0, 2.0, 4.0, 2.0])
    cli = subprocess.run([str(venv / "bin" / "conv1d-transpose"), "--help"], cwd=tmp_path,
                         check=True, capture_output=True, text=True)
    assert "conv1d_transpose" in cli.stdout or "demo" in cli.stdout
