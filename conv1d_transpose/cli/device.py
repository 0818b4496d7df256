"""`conv1d-transpose device start|stop|status`: the commands over conv1d_transpose/device.py
(emulated edge devices and fleets)."""
from __future__ import annotations

import json

import click

from .. import device as devices
from ..device import DEFAULT_FLEET_KEY, EMULATIONS
from .options import friendly_errors


@click.command("start")
@click.option("--emulate", type=click.Choice(sorted(EMULATIONS)), required=True,
              help="The CPU to emulate.")
@click.option("--port", type=int, default=None,
              help="Port on 127.0.0.1 of the device (with --fleet: of the tracker); default free.")
@click.option("--name", default=None, help="Name of the device (default arm64; fleet: fleet).")
@click.option("--fleet", type=int, default=None,
              help="Start TVM's RPC tracker and this many devices registered under --key.")
@click.option("--key", default=None, help=f"Tracker key of a fleet (default {DEFAULT_FLEET_KEY}).")
@friendly_errors
def start_command(emulate, port, name, fleet, key):
    """Start an emulated device (idempotent); prints where it listens."""
    state = devices.start(emulate, port=port, name=name, fleet=fleet, key=key,
                          log=lambda message: click.echo(message, err=True))
    click.echo(f"{state['name']}: {devices.describe(state)}")


@click.command("stop")
@click.argument("names", nargs=-1)
@friendly_errors
def stop_command(names):
    """Stop the named devices/fleets (default: all started ones)."""
    stopped = devices.stop(list(names) or None)
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing running")


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly_errors
def status_command(as_json):
    """List started devices and fleets, and whether they answer."""
    rows = devices.status()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no devices started (files in {devices.device_dir()})")
        return
    for row in rows:
        health = "running" if row["running"] else "NOT RUNNING (stop it to clean up)"
        what = (f"fleet of {row['devices']} emulated {row['emulate']} devices, tracker"
                if row["kind"] == "fleet" else f"emulated {row['emulate']} device")
        key = f", key {row['key']!r}" if row["key"] else ""
        click.echo(f"{row['name']}: {what} at {row['address']}{key}: {health} "
                   f"(pids {' '.join(map(str, row['pids']))})")


@click.group("device")
def device():
    """Emulated edge devices (TVM RPC servers under qemu) and fleets (TVM's RPC tracker)."""


for _command in (start_command, stop_command, status_command):
    device.add_command(_command)
