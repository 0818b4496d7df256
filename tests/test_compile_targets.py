"""targets.yaml: the shipped entries, validation errors that name file/target/key,
capabilities, and that loading targets needs no TVM."""
import os
import subprocess
import sys
import textwrap

import pytest

from conv1d_transpose.compile import targets as targets_module
from conv1d_transpose.compile.targets import (ENV_TARGETS, get_target, load_targets,
                                              parse_targets)
from conv1d_transpose.graph.errors import ArgumentError

SHIPPED = ("host", "x86-avx512", "x86-avx2", "cuda-sm80", "cuda-sm90", "arm64", "rpi4",
           "jetson-orin")


def write(tmp_path, text, name="targets.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_targets_load_and_make_tvm_targets():
    entries = load_targets()
    assert set(SHIPPED) <= set(entries)
    for name in SHIPPED:
        target = entries[name].tvm_target()
        assert target.kind.name == entries[name].kind
    assert entries["cuda-sm90"].tvm_target().attrs["arch"] == "sm_90"
    assert entries["cuda-sm90"].tvm_target().host.kind.name == "llvm"
    assert entries["jetson-orin"].tvm_target().host.attrs["mtriple"] == "aarch64-linux-gnu"
    assert entries["arm64"].target_dict()["mattr"] == ["+neon"]
    assert entries["rpi4"].target_dict()["mcpu"] == "cortex-a72"


def test_shipped_families_and_cross():
    entries = load_targets()
    assert [entries[n].family for n in SHIPPED] == ["cpu"] * 3 + ["cuda"] * 2 + ["cpu"] * 2 + ["cuda"]
    for name in ("arm64", "rpi4", "jetson-orin"):
        assert entries[name].machine == "aarch64"
        assert entries[name].cross_compiler == "aarch64-linux-gnu-gcc"
    if targets_module.local_machine() == "x86_64":
        assert entries["arm64"].is_cross and not entries["host"].is_cross


def test_host_mcpu_is_detected_not_literal():
    from tvm.target import codegen

    config = load_targets()["host"].target_dict()
    assert config["mcpu"] == codegen.llvm_get_system_cpu() != "native"
    assert codegen.llvm_is_valid_cpu(config["mcpu"], codegen.llvm_get_system_triple())


def test_packaged_file_is_the_root_file():
    root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "targets.yaml")
    assert os.path.samefile(targets_module.default_targets_path(), root)


def test_env_var_selects_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, "mine: {target: {kind: llvm}}\n")
    monkeypatch.setenv(ENV_TARGETS, str(path))
    assert list(load_targets()) == ["mine"]
    assert get_target("mine").source == str(path)


BAD_FILES = {
    "unknown entry key": ("host:\n  target: {kind: llvm}\n  cross_compilr: gcc\n",
                          ["'host'", "'cross_compilr'"]),
    "unknown kind": ("gpu:\n  target: {kind: vulkan}\n", ["'gpu'", "'vulkan'", "kind"]),
    "unknown target option": ("host:\n  target: {kind: llvm, mcpus: haswell}\n",
                              ["'host'", "'mcpus'", "target"]),
    "missing target": ("host:\n  description: nothing to build for\n", ["'host'", "'target'"]),
    "target not a mapping": ("host:\n  target: llvm -mcpu=haswell\n", ["'host'", "'target'"]),
    "description not a string": ("host:\n  target: {kind: llvm}\n  description: 3\n",
                                 ["'host'", "'description'"]),
    "option of a bad type": ("host:\n  target: {kind: llvm, mattr: {a: 1}}\n",
                             ["'host'", "'mattr'"]),
    "cross_compiler not a string": ("a:\n  target: {kind: llvm}\n  cross_compiler: [gcc]\n",
                                    ["'a'", "'cross_compiler'"]),
    "rpc port not an int": ("a:\n  target: {kind: llvm}\n  rpc: {host: pi, port: '9090'}\n",
                            ["'a'", "'rpc'", "'port'"]),
    "rpc unknown key": ("a:\n  target: {kind: llvm}\n  rpc: {host: pi, port: 9090, key: x}\n",
                        ["'a'", "'rpc'", "'key'"]),
    "host on a cpu target": ("a:\n  target: {kind: llvm}\n  host: {kind: llvm}\n",
                             ["'a'", "'host'"]),
    "cuda without arch": ("g:\n  target: {kind: cuda}\n", ["'g'", "'arch'"]),
    "cuda host not llvm": ("g:\n  target: {kind: cuda, arch: sm_90}\n  host: {kind: cuda, arch: sm_80}\n",
                           ["'g'", "'host'", "llvm"]),
    "native mcpu with a triple": ("a:\n  target: {kind: llvm, mtriple: aarch64-linux-gnu, mcpu: native}\n",
                                  ["'a'", "native", "mtriple"]),
    "entry not a mapping": ("a: llvm\n", ["'a'"]),
    "empty file": ("", ["non-empty mapping"]),
    "a list, not a mapping": ("- host\n", ["non-empty mapping"]),
    "bad yaml": ("host: {target: [kind: llvm\n", ["not valid YAML"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_name_file_target_and_key(tmp_path, case):
    text, fragments = BAD_FILES[case]
    path = write(tmp_path, text)
    with pytest.raises(ArgumentError) as error:
        load_targets(path)
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ArgumentError, match="nowhere.yaml.*not found"):
        load_targets(path)


def test_unknown_target_name_lists_the_available_ones():
    with pytest.raises(ArgumentError, match=r"'cuda-sm99'.*available: host, "):
        get_target("cuda-sm99")


def test_tvm_refusal_names_file_and_target():
    entries = parse_targets({"odd": {"target": {"kind": "llvm", "mcpu": "not-a-cpu-at-all",
                                                "num-cores": "two"}}}, "my.yaml")
    with pytest.raises(ArgumentError, match=r"my.yaml: target 'odd'"):
        entries["odd"].tvm_target()


def test_host_capabilities():
    can_build, build_reason, can_run, run_reason = load_targets()["host"].capabilities()
    assert can_build and build_reason.startswith("builds")
    assert can_run and run_reason.startswith("runs")


def test_cross_target_cannot_run_here():
    if targets_module.local_machine() == "aarch64":
        pytest.skip("this machine is aarch64: arm64 is native here")
    capabilities = load_targets()["arm64"].capabilities()
    assert not capabilities.can_run
    assert "aarch64" in capabilities.run_reason and "cannot run" in capabilities.run_reason


def test_missing_cross_compiler_cannot_build():
    entry = parse_targets({"pi": {"target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"},
                                  "cross_compiler": "no-such-gcc-for-tests"}})["pi"]
    if not entry.is_cross:
        pytest.skip("this machine is aarch64")
    can_build, reason, _, _ = entry.capabilities()
    assert not can_build and reason == "cannot build (no-such-gcc-for-tests not found)"


def test_cuda_capabilities_follow_nvcc_and_gpu(monkeypatch):
    entry = load_targets()["cuda-sm90"]
    real_which = targets_module.shutil.which
    monkeypatch.setattr(targets_module.shutil, "which",
                        lambda name, *a, **k: None if name == "nvcc" else real_which(name, *a, **k))
    monkeypatch.setattr(targets_module, "cuda_device", lambda: None)
    can_build, build_reason, can_run, run_reason = entry.capabilities()
    assert can_build and "nvcc not found" in build_reason
    assert not can_run and run_reason == "cannot run (no GPU)"

    monkeypatch.setattr(targets_module.shutil, "which", lambda name, *a, **k: f"/usr/bin/{name}")
    monkeypatch.setattr(targets_module, "cuda_device", lambda: ("Fake A100", (8, 0)))
    can_build, build_reason, can_run, run_reason = entry.capabilities()
    assert can_build and build_reason.startswith("builds (nvcc found")
    assert not can_run and "sm_80, older than sm_90" in run_reason
    monkeypatch.setattr(targets_module, "cuda_device", lambda: ("Fake H100", (9, 0)))
    assert entry.capabilities().can_run


def test_cpu_features_the_kernel_hides_do_not_count_as_present(tmp_path):
    # LLVM lists the features of this CPU's model; a VM may turn AMX or AVX-512 off, and
    # then only /proc/cpuinfo says so (this machine kind: an Emerald Rapids without AMX).
    from conv1d_transpose.compile.targets import _hidden_cpu_features

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx512f avx512_bf16 fma\n")
    model = {"amx-tile", "amx-int8", "avx512f", "avx512bf16", "avx512fp16", "fma", "sse4.2"}
    assert _hidden_cpu_features(model, str(cpuinfo)) == {"amx-tile", "amx-int8", "avx512fp16"}
    assert _hidden_cpu_features(model, str(tmp_path / "missing")) == set()


def test_cpu_missing_isa_features_cannot_run():
    with open("/proc/cpuinfo") as file:
        flags = set(next(line for line in file if line.startswith("flags")).split())
    if "amx_tile" in flags:
        pytest.skip("this CPU has AMX: a sapphirerapids target runs here")
    entry = parse_targets({"spr": {"target": {"kind": "llvm", "mcpu": "sapphirerapids"}}})["spr"]
    capabilities = entry.capabilities()
    assert not capabilities.can_run and "amx" in capabilities.run_reason


def test_loading_targets_does_not_import_tvm():
    code = ("import sys, conv1d_transpose.compile as c; c.load_targets(); "
            "print('tvm' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
