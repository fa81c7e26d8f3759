"""The ``analyze`` group loads each command's module when the command is looked up: every command
is listed by ``--help``, each one's own ``--help`` works, and ``report`` runs without the modules
of the commands it does not use (mitmproxy, the watch view)."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from analyzer.cli import COMMANDS, main


def test_help_lists_every_command_and_each_has_its_own_help():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0, res.output
    listed = res.output.split("Commands:", 1)[1]
    for name in COMMANDS:
        assert f"  {name} " in listed, name
        command = main.get_command(None, name)
        paths = [[name]] + [[name, sub] for sub in getattr(command, "commands", {})]
        for path in paths:
            sub = CliRunner().invoke(main, [*path, "--help"])
            assert sub.exit_code == 0, (path, sub.output)
            # every command's help shows an example of itself (CliRunner's usage line says "main")
            assert f"analyze {' '.join(path)}" in sub.output, path


def test_an_unknown_command_is_a_one_line_error():
    res = CliRunner().invoke(main, ["nosuch"])
    assert res.exit_code == 2
    assert "No such command 'nosuch'" in res.output


def test_report_does_not_import_the_other_commands_modules():
    code = ("import sys\nfrom analyzer.cli import main\n"
            "main.get_command(None, 'report')\n"
            "print(sorted(m for m in sys.modules if m.startswith(('mitmproxy', 'analyzer.cli.watch', 'textual'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
