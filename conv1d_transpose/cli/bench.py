"""`conv1d-transpose bench`: the command over conv1d_transpose/bench.py (run_bench, render,
plot)."""
from __future__ import annotations

import json
import sys

import click

from .options import (console, friendly_errors, layer_options, only_option, select_workloads,
                      split_list)


@click.command("bench")
@layer_options
@only_option
@click.option("--backends", multiple=True, metavar="LIST",
              help="Comma-separated: tvm:<target>, onnxruntime:cpu, tensorflow, torch, "
                   "openvino, litert, "
                   "and on a GPU torch:cuda, onnxruntime:cuda (default: all that apply; "
                   "'tvm' means every target in --targets).")
@click.option("--targets", multiple=True, metavar="LIST",
              help="TVM targets for 'tvm' (default: every targets.yaml entry that runs here).")
@click.option("--dtype", default="float32", show_default=True)
@click.option("--repeat", type=int, help="Timed calls per backend per round (default 10, quick 3).")
@click.option("--rounds", type=int, help="Interleaved rounds (default 5, quick 2).")
@click.option("--threads", type=int, help="Threads for every backend (default: physical cores).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a PNG bar chart.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="Write the results as one markdown table (layers).")
@click.option("--quick", is_flag=True, help="Few rounds and calls: a smoke run.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Artifact cache for the TVM backends (default: a fresh one, so that "
                   "compile time is measured), e.g. artifacts built on another machine.")
@click.option("--untuned", is_flag=True,
              help="The generic schedule for every layer, no tuning record (shipped or "
                   "yours): what a layer of your own gets before `tune`.")
@click.option("--model", "models", multiple=True, metavar="FILE|NAME",
              help="Bench whole models instead of layers: an .onnx file or a built-in "
                   "architecture (hifigan-v1, encodec-decoder, demucs-v2-decoder, ...); "
                   "backends auto, onnxruntime:cpu (default) or tvm:<target>.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=SHAPE",
              help="With --model: the shape of an input with a free dimension, e.g. "
                   "mel=1x80x50.")
@click.option("--profile", is_flag=True,
              help="With --model: where each backend's time goes (segments, op types).")
@click.option("--stream", "stream_frames", type=int, metavar="FRAMES",
              help="Stream each layer in chunks of FRAMES frames instead: one chunk's "
                   "latency on onnxruntime (the exported step), our TVM backend on the "
                   "same step, and op.stream() on TVM, state included.")
@click.option("--dynamic-width", "dynamic_frames", metavar="FRAMES,...",
              help="One TVM build for every width instead: each layer of the dynamic-width "
                   "bench (hifigan-up1..4, encodec-up1..3; --only narrows; NCW unless "
                   "--data-format says) exported with a free width and run at these model "
                   "lengths, e.g. 50,200,1000, against a build per width and onnxruntime.")
@friendly_errors
def bench(only, backends, targets, dtype, repeat, rounds, threads, json_path, plot_path,
          markdown_path, quick, cache_dir, untuned, models, inputs, profile, stream_frames,
          dynamic_frames, **layer):
    """Check every backend against the reference, then time them interleaved."""
    from .. import bench as benchmark

    if plot_path:
        benchmark.require_matplotlib(plot_path)
    if stream_frames is not None:
        from .. import stream_bench

        document = stream_bench.run_stream_bench(
            select_workloads(only, layer), stream_frames,
            rounds=rounds or (2 if quick else 5), threads=threads, cache_dir=cache_dir)
        stream_bench.render_stream(document, console)
        _write_and_exit(document, json_path)
        return
    if dynamic_frames is not None:
        from .. import dynamic_bench

        frames = [int(value) for value in split_list([dynamic_frames])]
        document = dynamic_bench.run_dynamic_bench(
            dynamic_bench.layers_named(split_list(only), layer.get("data_format")), frames,
            rounds=rounds or (2 if quick else 5), threads=threads, cache_dir=cache_dir,
            quick=quick)
        dynamic_bench.render_dynamic(document, console)
        _write_and_exit(document, json_path)
        return
    if models:
        _bench_models(models, split_list(backends) or None, inputs, threads, quick, rounds,
                      cache_dir, profile, json_path, plot_path)
        return
    workloads = select_workloads(only, layer)
    document = benchmark.run_bench(workloads, split_list(backends) or None, dtype, repeat,
                                   threads, quick, progress=sys.stderr.isatty(), rounds=rounds,
                                   targets=split_list(targets) or None, cache_dir=cache_dir,
                                   untuned=untuned)
    benchmark.render(document, console)
    _write_and_exit(document, json_path, plot_path and (benchmark.plot, plot_path),
                    markdown_path and (benchmark.markdown_table, markdown_path))


def _bench_models(models, backends, inputs, threads, quick, rounds, cache_dir, profile,
                  json_path, plot_path):
    from .. import model_bench

    document = model_bench.run_model_bench(
        models, backends, inputs=model_bench.parse_inputs(inputs), threads=threads,
        quick=quick, rounds=rounds, cache_dir=cache_dir, profile=profile,
        progress=(lambda text: console.print(f"[dim]{text}[/]")) if sys.stderr.isatty()
        else None)
    model_bench.render_models(document, console)
    _write_and_exit(document, json_path, plot_path and (model_bench.plot_models, plot_path))


def _write_and_exit(document, json_path, plot=None, markdown=None):
    """Write the run's JSON, plot (draw, path) and markdown (render, path) where asked;
    exit 1 if a backend failed its check."""
    if json_path:
        with open(json_path, "w") as stream:
            json.dump(document, stream, indent=1)
        console.print(f"wrote {json_path}")
    if plot:
        draw, path = plot
        draw(document, path)
        console.print(f"wrote {path}")
    if markdown:
        render, path = markdown
        with open(path, "w") as stream:
            stream.write(render(document))
        console.print(f"wrote {path}")
    if any(r["status"] == "FAIL" for r in document["records"]):
        sys.exit(1)
