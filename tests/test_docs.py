"""The README and docs/ against the code: generated blocks are the command's output, and
every relative link leads somewhere.

A block between `<!-- generated: COMMAND -->` and `<!-- end generated -->` holds COMMAND's
output in a ```text fence. Only output that is the same on every machine goes in such a
block (the `--help` texts, at click's width for a terminal of 80 columns or more); tables
that depend on the machine (bench, targets, portability) name their command instead.
After changing a command, regenerate the blocks with `python tests/test_docs.py`.
"""
from __future__ import annotations

import pathlib
import re
import shlex

import click
import pytest
from click.testing import CliRunner

from conv1d_transpose.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PROGRAM = "conv1d-transpose"
HELP_WIDTH = 78  # click: min(terminal columns, 80) - 2
BLOCK = re.compile(
    r"(<!-- generated: (?P<command>[^\n]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def command_output(command: str) -> str:
    """The fenced output of a `conv1d-transpose ... --help` command, run in this process."""
    words = shlex.split(command)
    assert words[0] == PROGRAM and words[-1] == "--help", (
        f"generated block {command!r}: only `{PROGRAM} ... --help` is the same on every machine")
    result = CliRunner().invoke(main, words[1:], prog_name=PROGRAM, terminal_width=HELP_WIDTH,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return "```text\n" + result.output.rstrip("\n") + "\n```\n"


def generated_blocks() -> list[tuple[str, str, str]]:
    """(file, command, body) of every generated block in the README and docs/."""
    return [(path.relative_to(ROOT).as_posix(), match["command"], match["body"])
            for path in DOCS for match in BLOCK.finditer(path.read_text(encoding="utf-8"))]


def every_command(group: click.Group = main, prefix: tuple = ()) -> list[str]:
    """`conv1d-transpose --help`, then each command's and subcommand's `--help`."""
    commands = [shlex.join([PROGRAM, *prefix, "--help"])]
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            commands += every_command(command, (*prefix, name))
        else:
            commands.append(shlex.join([PROGRAM, *prefix, name, "--help"]))
    return commands


@pytest.mark.parametrize("path, command, body", [
    pytest.param(path, command, body, id=f"{path}: {command}")
    for path, command, body in generated_blocks()])
def test_generated_block_is_the_commands_output(path, command, body):
    assert body == command_output(command), (
        f"{path}: the block of `{command}` is stale; regenerate with `python tests/test_docs.py`")


def test_the_cli_reference_has_every_command():
    documented = {command for path, command, _ in generated_blocks() if path == "docs/cli.md"}
    assert set(every_command()) <= documented, (
        f"docs/cli.md lacks {sorted(set(every_command()) - documented)}: add a generated block "
        f"for each, then run `python tests/test_docs.py`")


def anchors(path: pathlib.Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    seen: dict[str, int] = {}
    result = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        if line.startswith("#"):
            slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            result.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return result


@pytest.mark.parametrize("path", DOCS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_relative_links_lead_to_files_and_headings(path):
    broken = []
    for target in LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: broken links {broken}"


def update() -> None:
    """Rewrite every generated block with its command's output."""
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        new = BLOCK.sub(lambda m: m.group(1) + command_output(m["command"]) + m.group(4), text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"updated {path.relative_to(ROOT)}")


if __name__ == "__main__":
    update()
