"""Every `cai` command the README and the docs show is one the CLI takes: its command, options, choices and value
types are parsed against the real click commands (nothing runs). `make test` builds the docs site with --strict
before the suite, so a broken link fails too."""

import json
import re
import shlex
import subprocess
import sys

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```([a-z]*)\n(.*?)```", re.S)
CHECK = """
import json, sys
import click
from cai.cli import cli
from cai.errors import CaiError

failures = []
for where, args in json.load(sys.stdin):
    command, name = cli, "cai"
    while isinstance(command, click.Group) and args and args[0] in command.commands:
        name, command, args = args[0], command.commands[args[0]], args[1:]
    try:
        ctx = command.make_context(name, list(args))
        if name == "generate" and not ctx.params.get("config_file"):  # the values against their declarations
            from cai.config import catalogue, load

            load(None, **{k: v for k, v in ctx.params.items() if k in catalogue().settings})
    except click.exceptions.Exit:
        pass  # --help
    except click.ClickException as e:
        failures.append(f"{where}: {e.format_message()}")
    except CaiError as e:
        failures.append(f"{where}: {e}")
print(json.dumps(failures))
"""


def commands(text: str) -> list[str]:
    """The `cai ...` commands of a page's shell blocks, continuation lines joined and comments dropped."""
    out = []
    for language, block in FENCE.findall(text):
        if language not in ("bash", "console", "shell", "sh") and not (language == "" and "─>" not in block):
            continue  # a plain block drawn with arrows is a diagram, not commands
        lines = iter(block.splitlines())
        for line in lines:
            line = line.strip().removeprefix("$ ")
            if not line.startswith("cai "):
                continue
            while line.endswith("\\"):
                line = line[:-1] + " " + next(lines).strip()
            out.append(line)
    return out


def test_the_docs_show_commands_and_every_one_parses():
    found = [
        (f"{page.name}: {c}", shlex.split(c, comments=True)[1:]) for page in PAGES for c in commands(page.read_text())
    ]
    assert len(found) >= 30  # every page shows its commands; a regex that found none would pass vacuously
    assert {page.name for page in PAGES if commands(page.read_text())} >= {"README.md", "generate.md", "eval.md"}
    # the guide's stage example (`--stage echo`) needs the toy stage plug-in installed: it is, on this path
    env = {"PYTHONPATH": str(ROOT / "tests" / "toy_plugin")}
    r = subprocess.run(
        [sys.executable, "-c", CHECK],
        input=json.dumps(found),
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, **env},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.splitlines()[-1]) == []


def test_a_wrong_command_in_the_docs_would_be_caught():
    """The check itself: an unknown option and a bad choice are reported."""
    bad = [("x", ["generate", "--no-such-flag", "1"]), ("y", ["generate", "--stage", "nope"]), ("z", ["stats", "r"])]
    r = subprocess.run(
        [sys.executable, "-c", CHECK], input=json.dumps(bad), capture_output=True, text=True, timeout=300
    )
    failures = json.loads(r.stdout.splitlines()[-1])
    assert len(failures) == 2 and failures[0].startswith("x: No such option") and "nope" in failures[1]
