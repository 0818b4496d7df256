"""The `conv1d-transpose` command line: the click group `main` and its commands.

Each module here holds the commands of one group (layer, artifacts, bench, tune,
portability, device) as plain click commands over a library module of the package;
`options` holds what they share. Commands join the group in one place, below.
"""
from __future__ import annotations

import click

from . import artifacts, bench, device, layer, portability, tune


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="conv1d-transpose")
def main():
    """TensorFlow's tf.nn.conv1d_transpose: exact, exported as ONNX, compiled by TVM."""


for _command in (layer.demo, layer.export, artifacts.list_targets, artifacts.compile_command,
                 artifacts.run_command, bench.bench, tune.tune, portability.portability,
                 device.device):
    main.add_command(_command)

__all__ = ["main"]
