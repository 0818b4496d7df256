"""`conv1d-transpose bench`: the JSON document, the plot, the checks that gate ranking."""
import importlib.util
import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from conv1d_transpose import bench as bench_module
from conv1d_transpose.bench import parse_backends, run_bench
from conv1d_transpose.cli.bench import bench as bench_command
from conv1d_transpose.peers import (Unavailable, litert_runner, openvino_runner,
                                    tensorflow_runner, torch_runner)
from conv1d_transpose.graph.reference import max_error
from conv1d_transpose.workloads import Workload

TINY = ["--width", "8", "--cin", "4", "--cout", "4", "--kernel", "4", "--stride", "2"]
PEERS = [name for name, module in (("tensorflow", "tensorflow"), ("torch", "torch"))
         if importlib.util.find_spec(module)]
RECORD_TYPES = {"workload": str, "backend": str, "target": str, "dtype": str,
                "median_ms": float, "p10_ms": float, "p90_ms": float, "gflops": float,
                "speedup_vs_onnxruntime": float, "max_abs_err": float, "status": str,
                "rank": int}


def invoke(*args):
    return CliRunner().invoke(bench_command, [*args], catch_exceptions=False)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = invoke(*TINY, "--quick", "--backends", ",".join(["onnxruntime:cpu", *PEERS]),
                    "--json", str(out / "bench.json"), "--plot", str(out / "bench.png"))
    return result, out


def test_quick_run_writes_the_documented_json(quick_run):
    result, out = quick_run
    assert result.exit_code == 0, result.output
    document = json.loads((out / "bench.json").read_text())
    header = document["header"]
    for key in ("machine", "cpu_model", "cores", "date", "versions", "blas", "threads",
                "sgemm_gflops", "gemm"):
        assert key in header
    assert set(header["versions"]) >= {"numpy", "onnxruntime", "tvm", "tensorflow", "torch",
                                       "conv1d-transpose"}
    assert header["sgemm_gflops"]["custom"] > 0
    assert header["gpu"] is None  # named only when a GPU backend was asked for
    records = document["records"]
    assert [r["backend"] for r in records] == ["onnxruntime:cpu", *PEERS]
    for record in records:
        for key, kind in RECORD_TYPES.items():
            assert isinstance(record[key], kind), (key, record)
        assert record["status"] == "ok"
        assert record["p10_ms"] <= record["median_ms"] <= record["p90_ms"]
        assert record["max_abs_err"] < 1e-4
    assert sorted(r["rank"] for r in records) == list(range(1, len(records) + 1))
    assert records[0]["speedup_vs_onnxruntime"] == 1.0


def test_quick_run_plots_a_png(quick_run):
    from PIL import Image
    _, out = quick_run
    with Image.open(out / "bench.png") as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0


def test_geometric_mean_counts_the_large_workloads_every_backend_ran():
    def record(workload, backend, speedup):
        return {"workload": workload, "backend": backend, "speedup_vs_onnxruntime": speedup}

    document = {
        "header": {"workloads": [{"name": "a", "flops": 60e6}, {"name": "b", "flops": 900e6},
                                 {"name": "tiny", "flops": 40e6}]},
        "records": [record("a", "onnxruntime:cpu", 1.0), record("b", "onnxruntime:cpu", 1.0),
                    record("tiny", "onnxruntime:cpu", 1.0),
                    record("a", "tvm:host", 2.0), record("b", "tvm:host", 8.0),
                    record("tiny", "tvm:host", 100.0),  # under 50 MFLOP: not counted
                    record("a", "torch", 0.5), record("b", "torch", None),  # torch failed on b
                    # onnxruntime on the GPU is a peer like any other, not the reference
                    record("a", "onnxruntime:cuda", 3.0), record("b", "onnxruntime:cuda", 12.0)],
    }
    means = bench_module.geomean_vs_onnxruntime(document)
    assert set(means) == {"tvm:host", "onnxruntime:cuda"}
    mean, count = means["tvm:host"]
    assert count == 2 and mean == pytest.approx(4.0)
    assert means["onnxruntime:cuda"] == (pytest.approx(6.0), 2)


def test_unknown_backend_is_a_usage_error_naming_it():
    result = invoke(*TINY, "--quick", "--backends", "onnxruntime,mxnet")
    assert result.exit_code == 2
    assert "'mxnet'" in result.output and "onnxruntime" in result.output
    with pytest.raises(ValueError, match="tvm:nowhere"):
        parse_backends(["tvm:nowhere"])
    result = invoke("--quick", "--only", "hifigan-up1,nope")
    assert result.exit_code == 2 and "'nope'" in result.output


def test_a_wrong_backend_is_marked_fail_and_not_ranked(monkeypatch):
    def wrong(spec, filters, threads, target):
        runner = bench_module.RUNNERS["onnxruntime"](spec, filters, threads, target)
        runner.backend = "wrong"
        right = runner.call
        runner.call = lambda x: right(x) * 1.01
        return runner

    monkeypatch.setitem(bench_module.RUNNERS, "wrong", wrong)
    workload = Workload("tiny", batch=1, width=8, cin=4, cout=4, kernel=4, stride=2)
    document = run_bench([workload], ["onnxruntime:cpu", "wrong"], quick=True, progress=False)
    right, bad = document["records"]
    assert (right["status"], right["rank"]) == ("ok", 1)
    assert bad["status"] == "FAIL" and bad["rank"] is None
    assert bad["median_ms"] is None and bad["speedup_vs_onnxruntime"] is None
    assert bad["max_abs_err"] > 1e-3


def test_missing_or_unbuildable_backends_are_skipped_with_a_reason():
    workload = Workload("tiny", batch=1, width=8, cin=4, cout=4, kernel=4, stride=2)
    document = run_bench([workload], ["onnxruntime", "tvm:arm64"], dtype="float64",
                         quick=True, progress=False)
    for record in document["records"]:
        assert record["status"].startswith("skipped: "), record
        assert record["rank"] is None


# The peers map TF's layout and padding onto their own; asymmetric SAME (odd crop at the
# end), VALID, NCW and dilation are the cases that a naive mapping gets wrong.
PEER_CASES = [
    dict(width=5, cin=3, cout=2, kernel=3, stride=2),                  # SAME, crop 0 | 1
    dict(width=5, cin=3, cout=2, kernel=4, stride=3, out_width=13),    # SAME, output_padding
    dict(width=5, cin=3, cout=2, kernel=4, stride=2, padding="VALID"),
    dict(width=6, cin=3, cout=2, kernel=3, stride=2, data_format="NCW"),
    dict(width=6, cin=3, cout=2, kernel=3, stride=2, dilation=2),
    # Odd total padding under SAME: what OpenVINO's CPU plugin gets wrong from the default
    # ONNX form (issue 31; its runner exports the portable form).
    dict(width=7, cin=4, cout=3, kernel=10, stride=5),
    dict(width=7, cin=4, cout=3, kernel=6, stride=3, data_format="NCW"),
]


@pytest.mark.parametrize("factory", [tensorflow_runner, torch_runner, openvino_runner,
                                     litert_runner],
                         ids=["tensorflow", "torch", "openvino", "litert"])
@pytest.mark.parametrize("case", PEER_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_peers_agree_with_the_reference(factory, case):
    workload = Workload("case", batch=2, **case)
    spec = workload.spec()
    x, f = workload.arrays()
    try:
        runner = factory(spec, f, 1)
    except Unavailable as reason:
        pytest.skip(str(reason))
    y = runner.call(x)
    assert y.shape == spec.output_shape and y.dtype == np.float32
    error, ok = max_error(y, x, f, spec)
    assert ok, error


def test_tvm_records_carry_compile_and_cache_hit_times(tmp_path):
    path = tmp_path / "bench.json"
    result = invoke(*TINY, "--quick", "--backends", "tvm:host,onnxruntime:cpu", "--targets", "host",
                    "--json", str(path))
    assert result.exit_code == 0, result.output
    tvm_record, ort_record = json.loads(path.read_text())["records"]
    assert tvm_record["backend"] == "tvm:host" and tvm_record["status"] == "ok"
    assert tvm_record["compile_s"] > 0 and tvm_record["load_ms"] > 0
    assert ort_record["compile_s"] is None and ort_record["load_ms"] is None


def test_torch_and_onnxruntime_on_the_gpu_are_backends_of_their_own():
    assert parse_backends("torch:cuda,torch") == [("torch", "cuda"), ("torch", "cpu")]
    assert parse_backends("ort:cuda,onnxruntime") == [("onnxruntime", "cuda"),
                                                      ("onnxruntime", "cpu")]
    with pytest.raises(ValueError, match=r"'torch:gpu': torch runs on 'cpu' or 'cuda'"):
        parse_backends("torch:gpu")
    with pytest.raises(ValueError, match=r"'onnxruntime:gpu': onnxruntime runs on 'cpu' or"):
        parse_backends("onnxruntime:gpu")
    with pytest.raises(ValueError, match=r"'tensorflow:cuda': tensorflow runs on 'cpu' only"):
        parse_backends("tensorflow:cuda")
    # A CUDA target brings its GPU peers into the default set; a CPU-only set does not.
    assert {"torch:cuda", "onnxruntime:cuda"} <= set(
        bench_module.default_backends(["host", "cuda-sm90"]))
    assert not {"torch:cuda", "onnxruntime:cuda"} & set(bench_module.default_backends(["host"]))


def test_onnxruntime_on_the_gpu_is_checked_or_skipped_with_its_reason():
    import onnxruntime

    workload = Workload("tiny", batch=1, width=8, cin=4, cout=4, kernel=4, stride=2)
    document = run_bench([workload], ["onnxruntime", "onnxruntime:cuda"], quick=True,
                         progress=False)
    _, record = document["records"]
    assert record["backend"] == "onnxruntime:cuda"
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        # With onnxruntime-gpu but no usable GPU the runner refuses the CPU fallback.
        assert record["status"] == "ok" and record["max_abs_err"] < 1e-5 or \
            record["status"].startswith("skipped: ") and "CUDAExecutionProvider" in \
            record["status"], record
    else:
        assert record["status"] == "skipped: onnxruntime %s has no CUDA execution provider " \
            "(pip install onnxruntime-gpu)" % onnxruntime.__version__, record
        assert record["rank"] is None


@pytest.mark.parametrize("data_format", ["NWC", "NCW"])
def test_an_onnxruntime_provider_runs_the_fallbacks_model_alone(data_format, monkeypatch):
    # The GPU peer's session, on the one provider every install has: the portable form
    # of the fallback's model, TF's answer, and a provider that is not the one asked for
    # is refused.
    from conv1d_transpose import peers

    workload = Workload("tiny", batch=2, width=9, cin=3, cout=5, kernel=5, stride=3,
                        data_format=data_format)
    spec, (x, f) = workload.spec(), workload.arrays()
    from conv1d_transpose.graph import onnx_export

    built = []
    real_build_model = onnx_export.build_model

    def build_model(*args, **kwargs):  # onnxruntime's CUDA provider moves auto_pad to the CPU
        model = real_build_model(*args, **kwargs)
        built.append([a.name for node in model.graph.node for a in node.attribute])
        return model

    monkeypatch.setattr(onnx_export, "build_model", build_model)
    session = peers.onnxruntime_provider_session(spec, f, "CPUExecutionProvider", {})
    assert built and "auto_pad" not in built[0] and "pads" in built[0]
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    error, ok = max_error(y, x, f, spec)
    assert ok, error
    with warnings.catch_warnings(), pytest.raises(peers.Unavailable,
                                                 match="NoSuchExecutionProvider"):
        warnings.simplefilter("ignore")  # onnxruntime warns, then runs on the CPU
        peers.onnxruntime_provider_session(spec, f, "NoSuchExecutionProvider", {})


def test_torch_on_the_gpu_is_checked_or_skipped_with_its_reason():
    workload = Workload("tiny", batch=1, width=8, cin=4, cout=4, kernel=4, stride=2)
    document = run_bench([workload], ["onnxruntime", "torch:cuda"], quick=True, progress=False)
    _, record = document["records"]
    assert record["backend"] == "torch:cuda"
    try:
        import torch
        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = None
    if gpu:
        assert record["status"] == "ok" and record["max_abs_err"] < 1e-5, record
    else:
        reason = "sees no CUDA GPU" if gpu is False else "torch not installed"
        assert record["status"].startswith("skipped: ") and reason in record["status"], record
        assert record["rank"] is None


def test_a_given_cache_dir_is_used_and_a_second_run_builds_nothing(tmp_path):
    cache = tmp_path / "cache"
    args = [*TINY, "--quick", "--backends", "tvm:host", "--targets", "host",
            "--cache-dir", str(cache), "--json", str(tmp_path / "bench.json")]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    built = sorted(p.name for p in cache.iterdir() if (p / "manifest.json").is_file())
    assert len(built) == 1
    record, = json.loads((tmp_path / "bench.json").read_text())["records"]
    assert record["status"] == "ok" and record["note"].startswith("first make (cache given)")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in cache.iterdir() if (p / "manifest.json").is_file()) == built


def test_untuned_runs_every_tvm_kernel_without_records_and_says_so(tmp_path, monkeypatch):
    import os

    import tvm

    from conv1d_transpose.compile import records
    from conv1d_transpose.compile.kernels import Geometry, kernel_geometry
    from conv1d_transpose.workloads import find_workload

    geometry = kernel_geometry(Geometry.from_spec(find_workload("hifigan-up1").spec()))
    shipped_cpu = tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})
    assert records.lookup(geometry, shipped_cpu) is not None
    seen = []
    real = records.lookup

    def spy(*args, **kwargs):
        seen.append(os.environ.get(records.ENV_RECORDS))
        return real(*args, **kwargs)

    monkeypatch.setattr(records, "lookup", spy)
    path = tmp_path / "bench.json"
    result = invoke(*TINY, "--quick", "--backends", "tvm:host", "--targets", "host",
                    "--untuned", "--json", str(path))
    assert result.exit_code == 0, result.output
    assert seen == ["off"] and "generic (--untuned" in result.output
    assert "--untuned" in json.loads(path.read_text())["header"]["tvm_schedules"]
    assert records.ENV_RECORDS not in os.environ  # only for the bench's own builds
    monkeypatch.setenv(records.ENV_RECORDS, "off")
    assert real(geometry, shipped_cpu) is None and records.databases_digest() == "off"


def test_plot_without_matplotlib_fails_before_measuring(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setattr(bench_module, "run_bench", lambda *a, **k: pytest.fail("measured"))
    result = CliRunner().invoke(bench_command, [*TINY, "--plot", str(tmp_path / "b.png")])
    assert result.exit_code != 0
    assert "matplotlib is not installed" in result.output and "conv1d-transpose[bench]" in \
        result.output


def test_litert_says_why_it_cannot_take_a_dilated_layer():
    workload = Workload("case", batch=1, width=6, cin=3, cout=2, kernel=3, stride=2,
                        dilation=2)
    with pytest.raises(Unavailable, match="(no dilation|not installed|needs tensorflow)"):
        litert_runner(workload.spec(), workload.arrays()[1], 1)


def test_markdown_writes_the_run_as_one_table(tmp_path):
    path = tmp_path / "bench.md"
    result = invoke(*TINY, "--quick", "--backends", "onnxruntime:cpu", "--markdown", str(path))
    assert result.exit_code == 0, result.output
    lines = path.read_text().splitlines()
    assert lines[0] == "| workload | MFLOP | onnxruntime:cpu |"
    assert lines[2].startswith("| custom | ") and lines[2].count("|") == 4
