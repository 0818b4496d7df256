"""`conv1d-transpose portability`: the command over conv1d_transpose/portability.py (which
ONNX ConvTranspose forms each consumer runs right)."""
from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console

from ..portability import CONSUMER_KEYS, DEFAULT_EVERY, FORM_KEYS, measure, sweep_cases


@click.command("portability")
@click.option("--every", default=DEFAULT_EVERY, show_default=True, type=click.IntRange(min=1),
              help="Measure every N-th case of the foundation sweep.")
@click.option("--full", is_flag=True, help="The whole foundation sweep (--every 1, 2160 "
                                           "cases: 8x the default's time, dominated by "
                                           "TVM builds).")
@click.option("--form", "forms", multiple=True, type=click.Choice(FORM_KEYS),
              help="Only these forms (repeatable; default all).")
@click.option("--consumer", "consumers", multiple=True, type=click.Choice(CONSUMER_KEYS),
              help="Only these consumers (repeatable; default all).")
@click.option("--jobs", type=click.IntRange(min=1),
              help="Worker processes (default: one per CPU, at most 8).")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="Also write the matrix as a markdown table to FILE.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the raw counts as JSON to FILE.")
def portability(every, full, forms, consumers, jobs, markdown_path, json_path):
    """Which ONNX ConvTranspose forms give TF's answer on onnxruntime, onnx's
    ReferenceEvaluator, TVM's raw importer and our TVM path (docs/design/onnx-export.md's matrix)."""
    console = Console(width=None if sys.stdout.isatty() else 160)
    every = 1 if full else every
    cases = sweep_cases(every=every)
    selection = "the whole foundation sweep" if every == 1 else \
        f"every {every}th case of the foundation sweep"
    console.print(f"{len(cases)} cases ({selection}); forms x consumers: "
                  f"{len(forms or FORM_KEYS)} x {len(consumers or CONSUMER_KEYS)}")
    jobs = jobs or min(os.cpu_count() or 1, 8)
    matrix = measure(cases, forms or FORM_KEYS, consumers or CONSUMER_KEYS,
                     selection=selection, jobs=jobs,
                     progress=lambda line: console.print(line, style="dim"))
    console.print(matrix.to_rich_table())
    if markdown_path:
        with open(markdown_path, "w", encoding="utf-8") as file:
            file.write(matrix.to_markdown())
        console.print(f"markdown: {markdown_path}")
    if json_path:
        with open(json_path, "w", encoding="utf-8") as file:
            json.dump(matrix.to_json(), file, indent=2)
            file.write("\n")
        console.print(f"json: {json_path}")
