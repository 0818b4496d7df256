"""On the GPU machine (run by run.sh): verify and time what prepare.sh staged, with a
runtime-only TVM. Sections: environment, kernel_sweep (env VARIANTS: staged dirs),
onnxruntime_gpu, product_run_cli, op_api, tvm_default, copy_paths, call_overhead; env ONLY
picks some. Writes $OUT/check.json."""
import json, os, statistics, subprocess, sys, time, traceback
import numpy as np

OUT = os.environ.get("OUT", "/tmp/out")
HERE = os.path.dirname(os.path.abspath(__file__))
results = {"sections": {}}


def save():
    with open(os.path.join(OUT, "check.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)


def section(fn):
    only = os.environ.get("ONLY")
    if only and fn.__name__ not in only.split(","):
        return
    t0 = time.time()
    try:
        results["sections"][fn.__name__] = {"result": fn()}
    except Exception:
        results["sections"][fn.__name__] = {"error": traceback.format_exc()}
        print(traceback.format_exc(), flush=True)
    results["sections"][fn.__name__]["seconds"] = round(time.time() - t0, 1)
    print(f"== {fn.__name__}: {time.time() - t0:.1f} s", flush=True)
    save()


@section
def environment():
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    import tvm
    from conv1d_transpose.compile.targets import cuda_device
    from conv1d_transpose.runtime.tvm_backend import load_cuda_runtime
    load_cuda_runtime()
    dev = tvm.cuda(0)
    info = {"nvidia_smi": smi, "tvm": tvm.__version__, "runtime_only": tvm.base._RUNTIME_ONLY,
            "cuda_device": cuda_device(), "tvm_device_exists": dev.exist,
            "compute_version": dev.compute_version, "python": sys.version.split()[0],
            "numpy": np.__version__}
    print(info, flush=True)
    return info


def _reference(spec, x, f):
    # graph.reference.max_error's bound, computed once per layer rather than once for each
    # of its ~20 plans (demucs-dec1's reference alone is a 2 GFLOP float64 sum).
    from conv1d_transpose.graph.reference import TOLERANCES, magnitude, reference_conv1d_transpose
    exact = reference_conv1d_transpose(x, f, spec)
    rtol, atol = TOLERANCES[spec.dtype]
    return exact, rtol * magnitude(x, f, spec) + atol


def _torch_kernel_ms(spec, x, f):
    """torch conv_transpose1d on device-resident NCW data (its native layout), TF32 off.

    Kernel time only, so not peers.torch_runner (which copies and maps TF's padding): an
    uneven SAME crop is left out here, a slice that costs nothing on the GPU."""
    import torch
    import torch.nn.functional as F
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    xt = torch.from_numpy(x).cuda()
    if spec.data_format == "NWC":
        xt = xt.permute(0, 2, 1).contiguous()
    w = torch.from_numpy(np.ascontiguousarray(f.transpose(2, 1, 0))).cuda()
    sym = spec.pad_begin == spec.pad_end
    pad, opad = (spec.pad_begin, spec.output_padding) if sym else (0, 0)
    def call():
        return F.conv_transpose1d(xt, w, stride=spec.stride, padding=pad, output_padding=opad,
                                  dilation=spec.dilation)
    with torch.inference_mode():
        for _ in range(5):
            call()
        torch.cuda.synchronize()
        times = []
        for _ in range(7):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(20):
                call()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 20)
    return statistics.median(times)


@section
def kernel_sweep():
    import tvm
    from conv1d_transpose.compile.kernels import schedule_cuda
    from conv1d_transpose.compile.kernels import Geometry, pack_filters, plan_layout
    from conv1d_transpose.workloads import load_workloads
    dev = tvm.cuda(0)
    index, workloads = {}, {}
    for name in os.environ.get("VARIANTS", "variants,variants-outside").split(","):
        vdir = os.path.join(HERE, name)
        part = json.load(open(os.path.join(vdir, "index.json")))
        wfile = next(iter(part.values())).get("workloads")
        for w in load_workloads(os.path.join(HERE, wfile) if wfile else None):
            workloads[w.name] = w
        for tag, info in part.items():
            index[tag] = {**info, "dir": vdir}
    rows, cached = [], {}
    for tag, info in index.items():
        w = workloads[info["workload"]]
        spec = w.spec()
        if w.name not in cached:
            x, f = w.arrays()
            exact, bound = _reference(spec, x, f)
            try:
                torch_ms = _torch_kernel_ms(spec, x, f)
            except Exception as e:
                torch_ms = f"error: {e}"
            cached[w.name] = (x, f, exact, bound, torch_ms)
            print(w.name, "torch kernel ms", torch_ms, flush=True)
        x, f, exact, bound, torch_ms = cached[w.name]
        g = Geometry.from_spec(spec)
        plan = schedule_cuda.CudaPlan(**{k: info[k] for k in info
                                         if k in schedule_cuda.CudaPlan.__dataclass_fields__})
        layout = plan_layout(g, schedule_cuda.tiling(g, plan))
        row = {"tag": tag, **{k: v for k, v in info.items() if k != "dir"}, "torch_ms": torch_ms,
               "flops": spec.flops}
        try:
            mod = tvm.runtime.load_module(os.path.join(info["dir"], tag + ".so"))
            xt = tvm.runtime.tensor(x, dev)
            ft = tvm.runtime.tensor(pack_filters(f, layout), dev)
            out = tvm.runtime.empty(spec.output_shape, spec.dtype, dev)
            mod["main"](xt, ft, out)
            got = out.numpy().astype(np.float64)
            err = np.abs(got - exact)
            row["max_abs_err"] = float(err.max())
            row["ok"] = bool((err <= bound).all())
            ev = mod.time_evaluator("main", dev, number=20, repeat=7, min_repeat_ms=10)
            row["ms"] = 1e3 * statistics.median(list(ev(xt, ft, out).results))
        except Exception as e:
            row["error"] = str(e)[:500]
        print(tag, {k: row.get(k) for k in ("ok", "max_abs_err", "ms", "torch_ms", "error")}, flush=True)
        rows.append(row)
    return rows


@section
def onnxruntime_gpu():
    """onnxruntime-gpu's CUDA provider (cuDNN, TF32 off) on device-resident data (IO
    binding), every layer of the suite and of outside-suite.yaml, each result checked
    against the reference: the kernel-time peer beside torch's. Its time is the whole
    ONNX model's (in NWC: Transpose, ConvTranspose, Transpose), as a user of the model
    gets it; wall time of 20 runs queued back to back, then one device synchronize."""
    import onnxruntime as ort
    import torch
    from conv1d_transpose.peers import CUDA_PROVIDER_OPTIONS, onnxruntime_provider_session
    from conv1d_transpose.workloads import load_workloads
    rows = [{"onnxruntime": ort.__version__, "providers": ort.get_available_providers()}]
    print(rows[0], flush=True)
    run_options = ort.RunOptions()
    run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
    for wfile in (None, os.path.join(HERE, "outside-suite.yaml")):
        for w in load_workloads(wfile):
            spec = w.spec(); x, f = w.arrays()
            row = {"workload": w.name, "flops": spec.flops}
            try:
                sess = onnxruntime_provider_session(spec, f, "CUDAExecutionProvider",
                                                    CUDA_PROVIDER_OPTIONS)
                row["providers"] = sess.get_providers()
                xin = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
                yout = ort.OrtValue.ortvalue_from_shape_and_type(spec.output_shape, x.dtype,
                                                                 "cuda", 0)
                binding = sess.io_binding()
                binding.bind_ortvalue_input(sess.get_inputs()[0].name, xin)
                binding.bind_ortvalue_output(sess.get_outputs()[0].name, yout)
                for _ in range(5):
                    sess.run_with_iobinding(binding)
                exact, bound = _reference(spec, x, f)
                err = np.abs(yout.numpy().astype(np.float64) - exact)
                row["max_abs_err"], row["ok"] = float(err.max()), bool((err <= bound).all())
                times = []
                for _ in range(7):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(20):
                        sess.run_with_iobinding(binding, run_options)
                    torch.cuda.synchronize()
                    times.append((time.perf_counter() - t0) / 20 * 1e3)
                row["ms"] = statistics.median(times)
            except Exception as e:
                row["error"] = str(e)[:500]
            print(row, flush=True)
            rows.append(row)
    return rows


@section
def product_run_cli():
    """`conv1d-transpose run` on cached cuda-sm90 artifacts, checked against the reference."""
    from conv1d_transpose import Conv1DTranspose
    from conv1d_transpose.graph.reference import max_error
    from conv1d_transpose.workloads import find_workload
    outs = []
    for name, dtype in (("hifigan-up3", "float32"), ("stream-chunk", "float16")):
        w = find_workload(name)
        spec = w.spec(dtype); x, f = w.arrays(dtype, seed=3)
        _, f = w.arrays(dtype)
        op = Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding, spec.data_format,
                             spec.dilation, backend="tvm", target="cuda-sm90",
                             cache_dir=os.path.join(HERE, "cache"))
        art = op._session.artifact.path
        del op
        np.save("/tmp/x.npy", x)
        proc = subprocess.run([sys.executable, "-m", "conv1d_transpose.cli", "run", art,
                               "--input", "/tmp/x.npy", "--output", "/tmp/y.npy"],
                              capture_output=True, text=True, cwd="/tmp")
        row = {"workload": name, "dtype": dtype, "rc": proc.returncode,
               "stdout": proc.stdout[-800:], "stderr": proc.stderr[-800:]}
        if proc.returncode == 0:
            row["max_abs_err"], row["ok"] = max_error(np.load("/tmp/y.npy"), x, f, spec)
        outs.append(row)
        print(row, flush=True)
    return outs


@section
def op_api():
    """Conv1DTranspose(target='cuda-sm90') from the cache (a runtime-only TVM cannot
    compile), against the reference, for each layer and dtype make_cache.py built."""
    from conv1d_transpose import Conv1DTranspose
    from conv1d_transpose.graph.reference import max_error
    from conv1d_transpose.workloads import load_workloads
    rows = []
    built = json.load(open(os.path.join(HERE, "cache", "built.json")))
    for w in load_workloads():
        for dtype in [d for name, d in built if name == w.name]:
            spec = w.spec(dtype)
            x, f = w.arrays(dtype)
            t0 = time.time()
            op = Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding, spec.data_format,
                                 spec.dilation, backend="tvm", target="cuda-sm90",
                                 cache_dir=os.path.join(HERE, "cache"))
            load = time.time() - t0
            y = op(x)
            err, ok = max_error(y, x, f, spec)
            rows.append({"workload": w.name, "dtype": dtype, "backend": op.backend, "ok": ok,
                         "max_abs_err": err, "load_s": round(load, 3)})
            print(rows[-1], flush=True)
    return rows





@section
def tvm_default():
    """TVM's own CUDA build (no polyphase lowering), device-resident input."""
    import glob
    import tvm
    from tvm.runtime.vm import VirtualMachine
    from conv1d_transpose.workloads import find_workload
    dev = tvm.cuda(0)
    rows = []
    for path in sorted(glob.glob(os.path.join(HERE, "default", "*.so"))):
        name = os.path.basename(path)[:-3]
        w = find_workload(name)
        spec = w.spec(); x, f = w.arrays()
        exact, bound = _reference(spec, x, f)
        vm = VirtualMachine(tvm.runtime.load_module(path), dev)
        xt = tvm.runtime.tensor(x, dev)
        got = vm["main"](xt).numpy().astype(np.float64)
        ok = bool((np.abs(got - exact) <= bound).all())
        ev = vm.time_evaluator("main", dev, number=3, repeat=5, min_repeat_ms=10)
        ms = 1e3 * statistics.median(list(ev(xt).results))
        rows.append({"workload": name, "ok": ok, "ms": ms})
        print(rows[-1], flush=True)
    return rows


def _cached_cuda_op(name):
    """(op, spec, x) for a suite layer: Conv1DTranspose on cuda-sm90 from the staged cache."""
    from conv1d_transpose import Conv1DTranspose
    from conv1d_transpose.workloads import find_workload
    w = find_workload(name)
    spec = w.spec(); x, f = w.arrays()
    op = Conv1DTranspose(f, spec.output_shape, spec.stride, spec.padding, spec.data_format,
                         spec.dilation, backend="tvm", target="cuda-sm90",
                         cache_dir=os.path.join(HERE, "cache"))
    return op, spec, x


def _interleaved_ms(paths, rounds=15, calls=10):
    """Median ms per call of each of `paths` (name -> function), after 5 warm-up calls
    each, timed in `rounds` interleaved rounds of `calls` calls."""
    for fn in paths.values():
        for _ in range(5):
            fn()
    times = {key: [] for key in paths}
    for _ in range(rounds):
        for key, fn in paths.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[key].append((time.perf_counter() - t0) / calls * 1e3)
    return {key: statistics.median(values) for key, values in times.items()}


@section
def copy_paths():
    """numpy in -> numpy out on the GPU: copies to and from pageable numpy memory (which
    the driver stages through a buffer of its own) against staging through pinned host
    buffers (cudaMallocHost, TVM's cuda_host device), in and out, in only and out only,
    and the op itself (runtime/tvm_backend.py's _GpuStaging picks one of the first two by
    the bytes a call moves); interleaved rounds, medians, results compared."""
    import tvm
    from conv1d_transpose.runtime.tvm_backend import _host_buffer
    rows = []
    for name in os.environ.get("COPY_LAYERS", "dilated,hifigan-up4,hifigan-up1,batch8-up2,"
                               "ncw-up2,stream-chunk").split(","):
        op, spec, x = _cached_cuda_op(name)
        s = op._session
        stage = tvm.runtime.empty(x.shape, x.dtype, s._device)
        pin_in, in_view = _host_buffer(x.shape, x.dtype, s._host_device)
        pin_out, out_view = _host_buffer(spec.output_shape, x.dtype, s._host_device)

        # TVM 0.27 copies with cudaMemcpyAsync, which returns before a copy into pinned
        # memory is done: each pinned output is read after a device sync.
        def both():
            np.copyto(in_view, x)
            pin_in.copyto(stage)
            s._main(stage, *s._params).copyto(pin_out)
            s._device.sync()
            return out_view.copy()

        def pinned_in():
            np.copyto(in_view, x)
            pin_in.copyto(stage)
            return s._main(stage, *s._params).numpy()

        def pinned_out():
            stage.copyfrom(x)
            s._main(stage, *s._params).copyto(pin_out)
            s._device.sync()
            return out_view.copy()

        def pageable():
            stage.copyfrom(x)
            return s._main(stage, *s._params).numpy()

        def op_path():
            return op(x)

        paths = {"op": op_path, "pageable": pageable, "pinned": both, "pinned_in": pinned_in,
                 "pinned_out": pinned_out}
        ms = _interleaved_ms(paths)
        expected = op_path()
        row = {"workload": name, "mbytes_in_out": (x.nbytes + expected.nbytes) / 1e6, **ms,
               "same": all(bool(np.array_equal(expected, fn())) for fn in paths.values())}
        rows.append(row)
        print(row, flush=True)
    return rows


@section
def call_overhead():
    """numpy in -> numpy out on the GPU: the op (one device input buffer per thread) vs a
    fresh device tensor per call (the previous path), interleaved, medians."""
    import tvm
    rows = []
    for name in ("hifigan-up4", "hifigan-up1", "stream-chunk"):
        op, spec, x = _cached_cuda_op(name)
        s = op._session

        def fresh():
            return s._main(tvm.runtime.tensor(x, s._device), *s._params).numpy()

        def staged():
            return op(x)
        row = {"workload": name, **_interleaved_ms({"fresh": fresh, "staged": staged})}
        row["same"] = bool(np.array_equal(fresh(), staged()))
        rows.append(row)
        print(row, flush=True)
    return rows
