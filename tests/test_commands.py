"""The ``ibra-yolo`` command: dispatch, one-line errors shared by every subcommand, the ``tools/`` shims."""

import sys
import types

import pytest
from conftest import ROOT, run

from ibra_yolo import cli


def test_no_command_lists_models_and_commands(capsys):
    # What `python -m ibra_yolo` printed before the subcommands existed, then the commands.
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "model names for `yolo ... model=<name>`:" in out and "  spike-yolo-ibra-n.yaml" in out
    width = max(map(len, cli.COMMANDS))
    assert out.rstrip().splitlines()[-len(cli.COMMANDS) :] == [
        f"  {name:<{width}}  {summary}" for name, (_, summary) in cli.COMMANDS.items()
    ]


def test_unknown_command_is_one_line(capsys):
    assert cli.main(["nope"]) == 2
    err = capsys.readouterr().err
    names = "models, demo, eval, energy, convert-spikeyolo, deploy"
    assert err == f"error: unknown command 'nope': choose one of {names} (see ibra-yolo --help)\n"


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_reports_bad_arguments_in_one_line(name, capsys):
    # The shared parser: an argument error is one `error: ...` line on stderr and exit status 2, no usage block;
    # --help prints the command's own usage and returns 0.
    assert cli.main([name, "--no-such-option"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.endswith(" (see --help)\n") and err.count("\n") == 1
    assert cli.main([name, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: ibra-yolo {name} ")


def test_an_empty_value_is_refused(tmp_path, capsys, monkeypatch):
    # battery 11: `energy --out ''` wrote its three files into the current folder instead of runs/energy; an empty
    # value names nothing, in any command (a default of '' stays allowed: eval's --device '' means auto)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["energy", "--weights", "x.pt", "--source", "images", "--out", ""]) == 2
    assert capsys.readouterr().err == "error: --out is empty: give it a value, or leave the option out\n"
    assert cli.main(["eval", "--pred", " ", "--ann", "a.json"]) == 2
    assert capsys.readouterr().err.startswith("error: --pred is empty")
    assert list(tmp_path.iterdir()) == []


def test_a_command_is_one_registry_entry(monkeypatch):
    # Adding a command (e.g. `deploy`) is one line in COMMANDS: a module with main(argv) -> int, and a summary.
    seen = []
    module = types.ModuleType("ibra_yolo_fake_command")
    module.main = lambda argv: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "fake", (module.__name__, "a command for this test"))
    assert cli.main(["fake", "a", "--b"]) == 7 and seen == [["a", "--b"]]
    assert any(line.split() == ["fake", "a", "command", "for", "this", "test"] for line in cli.usage().splitlines())


@pytest.mark.parametrize("tool, command", [("eval_coco", "eval"), ("energy", "energy"), ("demo", "demo")])
def test_tools_scripts_are_the_commands(tool, command, python):
    # The documented `python tools/<tool>.py ...` commands still work: each is the package command under its old name.
    p = run([python, str(ROOT / "tools" / f"{tool}.py"), "--help"], cwd=ROOT)
    assert p.stdout.startswith(f"usage: ibra-yolo {command} ")
