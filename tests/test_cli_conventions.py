"""One CLI convention, enforced: every registered command (plugins included) against panderm_cli.options.SHARED."""

from __future__ import annotations

import click
import pytest

from panderm_cli.options import RENAMED, SHARED

# Commands that list or configure rather than compute: no progress, nothing to quieten.
LISTING = {"models", "plugins", "doctor", "weights list", "weights add", "weights remove", "classifier info",
           "reproduce list", "serve"}
# Commands that produce no result to print as JSON (plugins always prints JSON; serve runs a server).
NO_RESULT = {"plugins", "serve", "weights add", "weights remove"}
# Words retired because they meant two things or named a run folder another way: everywhere ("*"), or in
# one command (e.g. survival's --split, which was a risk cut-off).
RETIRED = {(command, old) for command, old in RENAMED} | {("*", "--no-quiet")}


def _walk(cmd: click.Command, path: list[str]):
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            yield from _walk(cmd.get_command(ctx, name), path + [name])
    else:
        yield " ".join(path), cmd


@pytest.fixture(scope="module")
def commands() -> dict[str, click.Command]:
    from panderm_cli.app import build_cli

    found = dict(_walk(build_cli(), []))
    assert len(found) > 40, sorted(found)
    return found


def _options(cmd: click.Command):
    return [p for p in cmd.params if isinstance(p, click.Option) and not p.hidden]


def _same_type(a: click.ParamType, b: click.ParamType) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, click.Choice):
        return tuple(a.choices) == tuple(b.choices)
    if isinstance(a, click.Path):
        return (a.type, a.file_okay, a.dir_okay, a.exists) == (b.type, b.file_okay, b.dir_okay, b.exists)
    if isinstance(a, (click.IntRange, click.FloatRange)):
        return (a.min, a.max, a.min_open, a.max_open) == (b.min, b.max, b.min_open, b.max_open)
    return True


def test_every_option_has_help(commands):
    missing = [f"{path} {max(p.opts, key=len)}" for path, cmd in commands.items() for p in _options(cmd)
               if not (p.help or "").strip()]
    assert not missing, f"options without help text: {missing}"


def test_every_command_has_examples(commands):
    missing = [path for path, cmd in commands.items() if "Examples:" not in (cmd.epilog or "")]
    assert not missing, f"commands without an Examples epilog: {missing}"


def test_every_group_has_examples():
    from panderm_cli.app import build_cli

    root, missing, stack = build_cli(), [], []
    stack.append(("panderm", root))
    while stack:
        path, group = stack.pop()
        if "Examples:" not in (group.epilog or ""):
            missing.append(path)
        ctx = click.Context(group)
        stack += [(f"{path} {n}", c) for n in group.list_commands(ctx)
                  if isinstance(c := group.get_command(ctx, n), click.Group)]
    assert not missing, f"groups without an Examples epilog: {missing}"


def test_shared_names_come_from_the_shared_decorators(commands):
    by_flag = {flag: row for row in SHARED.values() for flag in row.decls}
    problems = []
    for path, cmd in commands.items():
        for p in _options(cmd):
            rows = {by_flag[f].name: by_flag[f] for f in p.opts + p.secondary_opts if f in by_flag}
            if not rows:
                continue
            row = next(iter(rows.values()))
            where = f"{path} {row.name}"
            if getattr(p, "panderm_shared", None) != row.name:
                problems.append(f"{where}: hand-made, not from panderm_cli.options")
                continue
            if tuple(p.opts) != row.decls or p.name != row.dest:
                problems.append(f"{where}: spelled {p.opts} -> {p.name}, expected {row.decls} -> {row.dest}")
            if not _same_type(p.type, click.BOOL if row.is_flag else row.type):
                problems.append(f"{where}: type {p.type!r}, expected {row.type!r}")
            why = getattr(p, "panderm_default_why", None)
            if p.multiple or p.required:
                continue
            if p.default != row.default and not (why and why in (p.help or "")):
                problems.append(f"{where}: default {p.default!r}, expected {row.default!r} (or a why= in the help)")
    assert not problems, "\n".join(problems)


def test_out_is_always_a_required_folder(commands):
    optional = [path for path, cmd in commands.items() for p in _options(cmd) if "--out" in p.opts and not p.required]
    assert not optional, f"--out must be required (never a silent folder in the working directory): {optional}"


def test_retired_words_are_gone(commands):
    used = [f"{path} {flag}" for path, cmd in commands.items() for p in _options(cmd)
            for flag in p.opts + p.secondary_opts if ("*", flag) in RETIRED or (path, flag) in RETIRED]
    assert not used, f"retired option names still in use: {used}"


@pytest.mark.parametrize("args, new", [
    (["change", "train", "--pairs", "p.csv", "--steps", "whole", "--out", "o"], "--preprocess"),
    (["pretrain", "--steps", "2", "--out", "o"], "--max-steps"),
    (["survival", "--split", "0.5", "--out", "o"], "--risk-cutoff"),
    (["probe", "--features", "f", "--csv", "c", "--out", "o", "--task", "logreg"], "--head"),
    (["classifier", "build", "--finetune-run", "r", "--out", "o"], "--run"),
])
def test_an_old_option_name_answers_with_the_new_one(cli, args, new):
    res = cli(args)
    assert res.exit_code == 2 and f"renamed: use {new}" in res.output and "Traceback" not in res.output


def test_an_unknown_option_keeps_clicks_suggestion(cli):
    res = cli(["probe", "--features", "f", "--csv", "c", "--out", "o", "--tsk", "x"])
    assert res.exit_code == 2 and "No such option '--tsk'" in res.output and "renamed" not in res.output


def test_quiet_on_every_working_command(commands):
    missing = [path for path, cmd in commands.items() if path not in LISTING
               and not any("-q" in p.opts and "--quiet" in p.opts for p in _options(cmd))]
    assert not missing, f"-q/--quiet missing on: {missing}"


def test_json_wherever_a_command_produces_results(commands):
    missing = [path for path, cmd in commands.items() if path not in NO_RESULT
               and not any("--json" in p.opts for p in _options(cmd))]
    assert not missing, f"--json missing on: {missing}"


def test_a_shared_default_change_needs_a_reason():
    from panderm_cli import options

    with pytest.raises(ValueError, match="why="):
        options.batch_size(16)
    cmd = click.command()(options.batch_size(16, why="the recipe")(lambda batch_size: None))
    assert "[default: 16, the recipe]" in cmd.params[0].help


def test_progress_bars_hide_when_stderr_is_not_a_terminal(monkeypatch):
    import io
    import sys

    from panderm.progress import progress_bar

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or log file: not a TTY
    assert progress_bar(range(3), enabled=True).disable
    assert progress_bar(range(3), enabled=False).disable

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = progress_bar(range(3), enabled=True)
    assert not bar.disable
    assert list(bar) == [0, 1, 2]
    assert progress_bar(range(3), enabled=False).disable
