"""targets.yaml -> `TargetEntry`: a TVM 0.27 target dict plus the keys of ours.

Loading and validating the file needs no TVM (so `conv1d-transpose targets` and
`import conv1d_transpose` stay fast and work where TVM does not import); TVM is imported
only to make a `tvm.target.Target` or to ask LLVM about CPUs.

TVM 0.27 facts this relies on: targets are dicts, the old
"llvm -mcpu=..." string form raises, and `tvm.compile` wants a `Target`, not a dict.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import platform
import re
import shutil
from collections.abc import Mapping
from importlib import resources

import yaml

from ..graph.errors import ArgumentError, BackendError

ENV_TARGETS = "CONV1D_TRANSPOSE_TARGETS"

# `mcpu: native` is ours, not TVM's: replaced at build time by LLVM's name for this CPU.
NATIVE_CPU = "native"

ENTRY_KEYS = ("target", "host", "cross_compiler", "description", "rpc")
RPC_KEYS = ("host", "port", "tracker", "key", "emulated", "timeout")
# Seconds to connect to an RPC server (or to get a free device from a tracker).
DEFAULT_RPC_TIMEOUT = 10.0
KIND_FAMILIES = {"llvm": "cpu", "cuda": "cuda"}

# Option names TVM 0.27 accepts per kind (its "Unknown config option" lists), checked here
# so that a typo is reported with the file and target name, without importing TVM.
_COMMON_OPTIONS = ("kind", "keys", "tag", "device", "model", "libs", "host", "from_device",
                   "target_device_type")
KIND_OPTIONS = {
    "llvm": _COMMON_OPTIONS + (
        "mattr", "mcpu", "mtriple", "mfloat-abi", "mabi", "num-cores", "fast-math",
        "fast-math-nnan", "fast-math-ninf", "fast-math-nsz", "fast-math-arcp",
        "fast-math-contract", "fast-math-reassoc", "opt-level", "cl-opt", "jit",
        "vector-width"),
    "cuda": _COMMON_OPTIONS + (
        "mcpu", "arch", "max_shared_memory_per_block", "max_threads_per_block",
        "thread_warp_size", "registers_per_block", "l2_cache_size_bytes", "max_num_threads"),
}
_CUDA_ARCH = re.compile(r"^sm_(\d)(\d+)a?$")

# LLVM feature names that are instruction-set extensions (code using them faults on a CPU
# without them); the rest of LLVM's feature list is tuning ("fast-*", "slow-*", ...).
_ISA_FEATURE = re.compile(
    r"^(avx|sse|ssse|fma|f16c|amx|bmi|adx|aes|vaes|sha|gfni|vpclmulqdq|pclmul|popcnt|lzcnt|"
    r"movbe|xsave|cx16|rdrnd|rdseed|prfchw|neon|fp-armv8|crypto|sve|sme|dotprod|fullfp16|"
    r"fp16fml|i8mm|bf16|lse|rcpc|crc)")

_MACHINE_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


class Capabilities(tuple):
    """(can_build, build_reason, can_run, run_reason), with those names as attributes."""

    def __new__(cls, can_build: bool, build_reason: str, can_run: bool, run_reason: str):
        return super().__new__(cls, (can_build, build_reason, can_run, run_reason))

    can_build = property(lambda self: self[0])
    build_reason = property(lambda self: self[1])
    can_run = property(lambda self: self[2])
    run_reason = property(lambda self: self[3])

    def __repr__(self):
        return (f"Capabilities(can_build={self[0]}, build_reason={self[1]!r}, "
                f"can_run={self[2]}, run_reason={self[3]!r})")


@dataclasses.dataclass(frozen=True)
class TargetEntry:
    """One entry of targets.yaml, validated.

    `target` and `host` are the dicts as written (with `mcpu: native` unresolved);
    `target_dict()` is what is built for and recorded in manifests.
    """

    name: str
    target: Mapping
    host: Mapping | None = None
    cross_compiler: str | None = None
    description: str = ""
    rpc: Mapping | None = None
    source: str = "<memory>"

    @property
    def kind(self) -> str:
        return self.target["kind"]

    @property
    def family(self) -> str:
        """'cpu' or 'cuda'."""
        return KIND_FAMILIES[self.kind]

    @property
    def cpu_target(self) -> Mapping:
        """The dict of the target that runs host code: the target itself, or cuda's host."""
        return self.target if self.family == "cpu" else (self.host or {"kind": "llvm"})

    @property
    def machine(self) -> str:
        """The CPU architecture the library's host code is for, e.g. 'x86_64', 'aarch64'."""
        triple = self.cpu_target.get("mtriple")
        return _triple_machine(triple) if triple else local_machine()

    @property
    def is_cross(self) -> bool:
        """True when the library is for another CPU architecture than this machine's."""
        return self.machine != local_machine()

    @property
    def cuda_arch(self) -> str | None:
        return self.target.get("arch") if self.family == "cuda" else None

    def target_dict(self) -> dict:
        """The TVM target dict to build for, with `mcpu: native` resolved (imports TVM)."""
        result = _resolve_native(dict(self.target))
        if self.family == "cuda":
            result["host"] = _resolve_native(dict(self.host or {"kind": "llvm"}))
        return _plain(result)

    def tvm_target(self):
        """`tvm.target.Target` of `target_dict()`; TVM's refusal names our file and target."""
        import tvm

        config = self.target_dict()
        host = config.pop("host", None)
        try:
            return tvm.target.Target(config, host=host)
        except (ValueError, TypeError, RuntimeError) as error:
            raise ArgumentError(f"{self.source}: target {self.name!r}: TVM refuses its target "
                                f"dict {self.target_dict()}: {error}") from None

    def capabilities(self) -> Capabilities:
        """Whether this machine can build for the target, and run what it builds."""
        can_build, build_reason = self._build_capability()
        can_run, run_reason = self._run_capability()
        return Capabilities(can_build, build_reason, can_run, run_reason)

    def _build_capability(self) -> tuple[bool, str]:
        if tvm_runtime_only():
            return False, ("cannot build (this TVM is runtime-only, without its compiler "
                           "library: build on a machine with the full apache-tvm and bring "
                           "the artifact or its cache here)")
        if self.is_cross:
            if not self.cross_compiler:
                return False, (f"cannot build ({self.machine} code needs a cross_compiler "
                               f"in {self.source})")
            if not shutil.which(self.cross_compiler):
                return False, f"cannot build ({self.cross_compiler} not found)"
            linker = f"{self.cross_compiler} found"
        else:
            cc = _host_cc()
            if cc is None:
                return False, "cannot build (no C compiler found to link the library; set CC)"
            linker = f"{os.path.basename(cc.split()[0])} found"
        if self.family == "cuda":
            if shutil.which("nvcc"):
                return True, f"builds (nvcc found: {self.cuda_arch} device code; {linker})"
            return True, (f"builds CUDA source only (nvcc not found: kernels are compiled "
                          f"when first loaded on the GPU; {linker})")
        return True, f"builds ({linker})"

    def _run_capability(self) -> tuple[bool, str]:
        if self.rpc:
            return _rpc_capability(self.rpc)
        if self.is_cross:
            return False, (f"cannot run here ({self.machine} code on a {local_machine()} "
                           f"machine)")
        if self.family == "cuda":
            device = cuda_device()
            if device is None:
                return False, f"cannot run (no GPU)"
            name, (major, minor) = device
            want = _CUDA_ARCH.match(self.cuda_arch or "")
            if want and (major, minor) < (int(want.group(1)), int(want.group(2))):
                return False, (f"cannot run ({name} is sm_{major}{minor}, older than "
                               f"{self.cuda_arch})")
            return True, f"runs ({name}, sm_{major}{minor})"
        missing = self._missing_cpu_features()
        if missing:
            return False, (f"cannot run (this CPU lacks {', '.join(missing[:6])}"
                           f"{' ...' if len(missing) > 6 else ''})")
        return True, "runs (this CPU)"

    def _missing_cpu_features(self) -> list[str]:
        mcpu = self.cpu_target.get("mcpu")
        if mcpu in (None, NATIVE_CPU):
            return []
        try:
            from tvm.target import codegen
            import tvm

            def features(config):
                return set(codegen.llvm_get_cpu_features(tvm.target.Target(config)))

            wanted = features(_plain(self.cpu_target))
            have = features({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()})
        except Exception:  # no TVM: nothing to compare with; building will say more
            return []
        have -= _hidden_cpu_features(have)
        return sorted(f for f in wanted - have if _ISA_FEATURE.match(f))


# LLVM names this CPU's model (e.g. emeraldrapids) and lists the model's features, but a
# hypervisor or kernel may turn some off: a VM of this machine kind is an Emerald Rapids
# whose /proc/cpuinfo has no AMX. The x86 extensions most often hidden so, checked
# against the kernel's flags (names compared without '-', '_' and '.').
_KERNEL_GATED = re.compile(r"^(amx|avx512)")


def _hidden_cpu_features(llvm_features: set[str], cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The AMX and AVX-512 features of `llvm_features` that /proc/cpuinfo does not list
    (none where it cannot be read)."""
    try:
        with open(cpuinfo) as file:
            line = next(line for line in file if line.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    flags = {re.sub(r"[-_.]", "", flag) for flag in line.split(":", 1)[1].split()}
    return {f for f in llvm_features
            if _KERNEL_GATED.match(f) and re.sub(r"[-_.]", "", f) not in flags}


def local_machine() -> str:
    machine = platform.machine().lower()
    return _MACHINE_ALIASES.get(machine, machine)


def _triple_machine(triple: str) -> str:
    machine = triple.split("-")[0].lower()
    return _MACHINE_ALIASES.get(machine, machine)


def _host_cc() -> str | None:
    env = os.environ.get("CXX") or os.environ.get("CC")
    if env:
        return env if shutil.which(env.split()[0]) else None
    for name in ("g++", "gcc", "clang++", "clang", "c++", "cc"):  # tvm.support.cc.get_cc's order
        path = shutil.which(name)
        if path:
            return path
    return None


def tvm_runtime_only() -> bool:
    """True where TVM loaded only its runtime library (no libtvm_compiler.so, or
    TVM_USE_RUNTIME_LIB=1): artifacts run, nothing compiles."""
    try:
        import tvm
    except (ImportError, OSError):  # no TVM at all: building says more
        return False
    return bool(getattr(tvm.base, "_RUNTIME_ONLY", False))


@functools.lru_cache(maxsize=1)
def host_cpu() -> str:
    """LLVM's name for this machine's CPU, e.g. 'znver4', 'sapphirerapids' (imports TVM).

    Raises:
      BackendError where TVM is runtime-only (no libtvm_compiler.so, or
      TVM_USE_RUNTIME_LIB=1): only its compiler library knows LLVM's CPU names.
    """
    from tvm.target import codegen

    if tvm_runtime_only():
        raise BackendError(
            "mcpu: native needs TVM's compiler library to name this CPU, and this TVM is "
            "runtime-only; run artifacts of a target that names its CPU (e.g. a "
            "targets.yaml entry with mcpu: znver4), or install the full apache-tvm")
    return str(codegen.llvm_get_system_cpu())


@functools.lru_cache(maxsize=1)
def cuda_device() -> tuple[str, tuple[int, int]] | None:
    """(name, compute capability) of CUDA device 0, or None when there is no usable GPU.

    Asks the driver library directly: TVM's CUDA runtime (libtvm_runtime_cuda.so) cannot
    even be loaded where the driver's libcuda.so.1 is missing.
    """
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None
    device = ctypes.c_int(0)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    name = ctypes.create_string_buffer(256)
    if cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return None
    # 75, 76: CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)
    cuda.cuDeviceGetName(name, 256, device)
    return name.value.decode(errors="replace") or "GPU 0", (major.value, minor.value)


def _resolve_native(config: dict) -> dict:
    if config.get("mcpu") == NATIVE_CPU:
        config["mcpu"] = host_cpu()
    return config


def _plain(value):
    """YAML data as plain JSON-able Python (lists, not tuples), for TVM and manifests."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def default_targets_path() -> str:
    """$CONV1D_TRANSPOSE_TARGETS, else the targets.yaml shipped in the package."""
    env = os.environ.get(ENV_TARGETS)
    if env:
        return env
    return str(resources.files("conv1d_transpose").joinpath("targets.yaml"))


def load_targets(path=None) -> dict[str, TargetEntry]:
    """Read and validate a targets file; see targets.yaml for the keys.

    Args:
      path: a targets.yaml; default `default_targets_path()`.
    Returns:
      Target name -> `TargetEntry`, in file order.
    Raises:
      ArgumentError (a ValueError) naming the file, the target and the key at fault.
    """
    path = os.fspath(path) if path is not None else default_targets_path()
    try:
        with open(path, encoding="utf-8") as file:
            # libyaml's loader where PyYAML has it: every session reads this file, and the
            # pure-Python loader takes 7 ms of it against 1 ms (Zen 4, 2026-11-25).
            data = _safe_load(file)
    except FileNotFoundError:
        raise ArgumentError(f"{path}: targets file not found") from None
    except OSError as error:
        raise ArgumentError(f"{path}: cannot read targets file: {error}") from None
    except yaml.YAMLError as error:
        raise ArgumentError(f"{path}: not valid YAML: {error}") from None
    return parse_targets(data, path)


def _safe_load(stream):
    """yaml.safe_load, through libyaml's safe loader where PyYAML was built with it."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(stream)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_targets(data, source: str = "<memory>") -> dict[str, TargetEntry]:
    """Validate already-parsed targets data (see `load_targets`)."""
    if not isinstance(data, Mapping) or not data:
        raise ArgumentError(f"{source}: must be a non-empty mapping of target names to "
                            f"entries, got {type(data).__name__}")
    return {_check_name(name, source): _parse_entry(str(name), entry, source)
            for name, entry in data.items()}


def _check_name(name, source) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ArgumentError(f"{source}: target name {name!r} must be a string of letters, "
                            f"digits, '-', '_' or '.'")
    return name


def _parse_entry(name: str, entry, source: str) -> TargetEntry:
    where = f"{source}: target {name!r}"
    if not isinstance(entry, Mapping):
        raise ArgumentError(f"{where}: must be a mapping with keys {', '.join(ENTRY_KEYS)}, "
                            f"got {type(entry).__name__}")
    for key in entry:
        if key not in ENTRY_KEYS:
            raise ArgumentError(f"{where}: unknown key {key!r}; allowed: {', '.join(ENTRY_KEYS)}")
    if "target" not in entry:
        raise ArgumentError(f"{where}: missing key 'target' (a TVM target dict)")
    target = _check_target_dict(entry["target"], f"{where}: key 'target'")
    family = KIND_FAMILIES[target["kind"]]

    host = entry.get("host")
    if host is not None:
        if family != "cuda":
            raise ArgumentError(f"{where}: key 'host' is only for kind 'cuda' targets "
                                f"(this one is kind {target['kind']!r})")
        host = _check_target_dict(host, f"{where}: key 'host'")
        if host["kind"] != "llvm":
            raise ArgumentError(f"{where}: key 'host': kind must be 'llvm', got {host['kind']!r}")
    if family == "cuda":
        arch = target.get("arch")
        if not isinstance(arch, str) or not _CUDA_ARCH.match(arch):
            raise ArgumentError(f"{where}: key 'target': 'arch' must be like 'sm_90', got "
                                f"{arch!r} (without it TVM asks the local GPU)")

    cross = entry.get("cross_compiler")
    if cross is not None and (not isinstance(cross, str) or not cross.strip()):
        raise ArgumentError(f"{where}: key 'cross_compiler' must be an executable name, "
                            f"got {cross!r}")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise ArgumentError(f"{where}: key 'description' must be a string, "
                            f"got {type(description).__name__}")
    rpc = entry.get("rpc")
    if rpc is not None:
        rpc = _check_rpc(rpc, f"{where}: key 'rpc'")
    return TargetEntry(name=name, target=target, host=host, cross_compiler=cross,
                       description=description, rpc=rpc, source=source)


def _check_target_dict(config, where: str) -> dict:
    if not isinstance(config, Mapping):
        raise ArgumentError(f"{where}: must be a TVM target dict such as {{kind: llvm}}, "
                            f"got {type(config).__name__}")
    kind = config.get("kind")
    if kind not in KIND_FAMILIES:
        raise ArgumentError(f"{where}: unknown target kind {kind!r}; allowed: "
                            f"{', '.join(KIND_FAMILIES)}")
    for key, value in config.items():
        if key not in KIND_OPTIONS[kind]:
            raise ArgumentError(f"{where}: unknown option {key!r} for kind {kind!r}; allowed: "
                                f"{', '.join(KIND_OPTIONS[kind])}")
        if key == "host":
            raise ArgumentError(f"{where}: write the host target as the entry's key 'host', "
                                f"not inside the target dict")
        if not _is_option_value(value):
            raise ArgumentError(f"{where}: option {key!r} must be a string, number, bool or "
                                f"a list of strings, got {value!r}")
    mcpu = config.get("mcpu")
    if mcpu == NATIVE_CPU and kind == "llvm" and "mtriple" in config:
        raise ArgumentError(f"{where}: 'mcpu: {NATIVE_CPU}' means this machine's CPU and "
                            f"cannot be combined with 'mtriple'")
    return _plain(config)


def _is_option_value(value) -> bool:
    if isinstance(value, (str, bool, int, float)):
        return True
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _check_rpc(rpc, where: str) -> dict:
    """One of {host, port} (a TVM RPC server), {tracker: "host:port", key} (TVM's RPC
    tracker) or {emulated: NAME} (a device started by `conv1d-transpose device start`,
    resolved when connecting); `timeout` (seconds to connect) with any of them."""
    forms = "{host, port}, {tracker: 'host:port', key} or {emulated: name}, plus timeout"
    if not isinstance(rpc, Mapping):
        raise ArgumentError(f"{where}: must be a mapping {forms}, got {type(rpc).__name__}")
    for key in rpc:
        if key not in RPC_KEYS:
            raise ArgumentError(f"{where}: unknown key {key!r}; allowed: {', '.join(RPC_KEYS)}")
    given = [form for form, keys in (("server", ("host", "port")), ("tracker", ("tracker", "key")),
                                     ("emulated", ("emulated",)))
             if any(k in rpc for k in keys)]
    if len(given) != 1:
        raise ArgumentError(f"{where}: give exactly one of {forms}; got keys {sorted(rpc)}")
    result = {}
    if given == ["server"]:
        result.update(host=rpc.get("host"), port=rpc.get("port"))
        _check_address(result["host"], result["port"], where, "host", "port")
    elif given == ["tracker"]:
        tracker, key = rpc.get("tracker"), rpc.get("key")
        host, _, port = str(tracker).rpartition(":")
        if not isinstance(tracker, str) or not port.isdigit():
            raise ArgumentError(f"{where}: 'tracker' must be 'host:port' of TVM's RPC tracker, "
                                f"got {tracker!r}")
        _check_address(host, int(port), where, "tracker", "tracker")
        if not isinstance(key, str) or not key:
            raise ArgumentError(f"{where}: 'key' must be the device key the RPC servers "
                                f"registered with the tracker, got {key!r}")
        result.update(tracker=tracker, key=key)
    else:
        name = rpc.get("emulated")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ArgumentError(f"{where}: 'emulated' must be the name of a device started by "
                                f"`conv1d-transpose device start`, got {name!r}")
        result["emulated"] = name
    timeout = rpc.get("timeout", DEFAULT_RPC_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ArgumentError(f"{where}: 'timeout' must be a positive number of seconds, "
                            f"got {timeout!r}")
    result["timeout"] = float(timeout)
    return result


def _check_address(host, port, where: str, host_key: str, port_key: str) -> None:
    if not isinstance(host, str) or not host:
        raise ArgumentError(f"{where}: '{host_key}' must be a host name or address, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ArgumentError(f"{where}: '{port_key}' port must be an integer 1..65535, "
                            f"got {port!r}")


def rpc_endpoint(rpc: Mapping) -> dict:
    """The rpc block with `emulated: NAME` resolved from the running device's state:
    {host, port, timeout[, emulated]} or {tracker, key, timeout[, emulated]}.

    Raises:
      BackendError naming the command that starts an emulated device that is not running.
    """
    if "emulated" not in rpc:
        return dict(rpc)
    from .devices import resolve

    return {**resolve(rpc["emulated"]), "timeout": rpc.get("timeout", DEFAULT_RPC_TIMEOUT)}


def rpc_address(endpoint: Mapping) -> str:
    """'tracker host:port, key K' or 'host:port', for messages."""
    if "tracker" in endpoint:
        return f"tracker {endpoint['tracker']}, key {endpoint['key']!r}"
    return f"{endpoint['host']}:{endpoint['port']}"


def _rpc_capability(rpc: Mapping) -> tuple[bool, str]:
    """Runs over RPC. Not probed here: a TVM RPC server takes one connection at a time, so a
    probe would queue behind a running session; a session says within its timeout whether
    the device answers. An emulated device is checked from its recorded processes."""
    try:
        endpoint = rpc_endpoint(rpc)
    except ValueError as error:
        return False, f"cannot run ({error})"
    where = rpc_address(endpoint)
    if "emulated" in endpoint:
        from .devices import running

        if not running(endpoint["emulated"]):
            return False, (f"cannot run (emulated device {endpoint['emulated']!r} at {where} is "
                           f"not running; conv1d-transpose device stop, then start)")
        return True, f"runs over RPC at {where} (emulated: correctness only)"
    return True, f"runs over RPC at {where} (reachability checked when connecting)"


def get_target(name, targets=None) -> TargetEntry:
    """The entry called `name` from `targets` (a mapping from `load_targets`, a path to a
    targets file, or None for the default file)."""
    if isinstance(name, TargetEntry):
        return name
    if targets is None or isinstance(targets, (str, os.PathLike)):
        source = os.fspath(targets) if targets is not None else default_targets_path()
        targets = load_targets(source)
    else:
        source = next((entry.source for entry in targets.values()), "<memory>")
    if not isinstance(name, str) or name not in targets:
        raise ArgumentError(f"target={name!r} is not in {source}; available: "
                            f"{', '.join(targets)}")
    return targets[name]
