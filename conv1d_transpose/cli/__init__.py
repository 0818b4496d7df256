"""The `conv1d-transpose` command line: the click group `main` and its commands.

Each module here holds the commands of one group (layer, artifacts, bench, tune,
portability, device) as plain click commands over a library module of the package;
`options` holds what they share. Commands join the group in one place, below.
"""
from __future__ import annotations

import click

from . import artifacts, bench, device, layer, portability, tune


HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=HELP_OPTIONS)
@click.version_option(package_name="conv1d-transpose")
def main():
    """TensorFlow's tf.nn.conv1d_transpose: exact, exported as ONNX, compiled by TVM."""


def _with_help_options(command: click.Command) -> click.Command:
    """`-h` too, on the command itself and not only inherited from `main`: click keeps the
    help option a command made for its first context, so a command first invoked on its
    own (as the tests do) would otherwise offer `--help` alone from then on."""
    command.context_settings = {**HELP_OPTIONS, **command.context_settings}
    for sub in getattr(command, "commands", {}).values():
        _with_help_options(sub)
    return command


for _command in (layer.demo, layer.export, artifacts.list_targets, artifacts.compile_command,
                 artifacts.run_command, bench.bench, tune.tune, portability.portability,
                 device.device):
    main.add_command(_with_help_options(_command))

__all__ = ["main"]
