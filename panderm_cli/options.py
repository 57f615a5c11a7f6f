"""The options every command shares: one name, one meaning, one type, one default.

Commands build their common options from these decorators, never by hand, so a word means the
same thing everywhere (``--out`` is always a required output folder, ``--resume`` always a flag
that continues the run in ``--out``). ``SHARED`` is the written convention: ``docs/cli.md`` renders
it and ``tests/test_cli_conventions.py`` checks every registered command against it.

A command may change a shared default only with a reason (``why=``), which the help then shows:
``@batch_size(16, why="the paper's segmentation recipe")``. Recipe-driven commands (``pretrain``)
pass ``from_recipe=True``: the option is unset by default and unset options keep the recipe's value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click

PATH = click.Path(path_type=Path)
PRECISION_CHOICES = ("auto", "bf16", "fp16", "fp32")
DEFAULT_MODEL = "panderm_large_patch16_224"


@dataclass(frozen=True)
class SharedOption:
    """One row of the convention: flag names, Python parameter name, type, default and meaning."""

    decls: tuple[str, ...]
    dest: str
    help: str
    type: Any = None
    default: Any = None
    is_flag: bool = False
    required: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return max(self.decls, key=len)


def _row(*decls: str, dest: str, help: str, **kw) -> SharedOption:
    return SharedOption(tuple(decls), dest, help, **kw)


SHARED: dict[str, SharedOption] = {o.name: o for o in (
    _row("--csv", dest="csv_path", type=PATH,
         help="Dataset CSV (one row per sample; image paths relative to --root)."),
    _row("--root", dest="root", type=PATH,
         help="Folder the table's paths are relative to and must stay in [default: the table's folder]."),
    _row("--features", dest="features_dir", type=PATH, help="Feature folder written by `panderm extract`."),
    _row("--model", dest="model", type=click.STRING, default=DEFAULT_MODEL,
         help="Encoder name (see `panderm models`)."),
    _row("--weights", dest="weights", type=click.STRING,
         help="Encoder weights: registered name, file path or hub spec [default: the model's own]."),
    _row("--random-init", dest="random_init", is_flag=True, type=click.BOOL, default=False,
         help="Use a randomly initialised encoder (pipeline checks and ablations; features are meaningless)."),
    _row("--out", dest="out", type=PATH, required=True, help="Output folder."),
    _row("--run", dest="run_dir", type=PATH, required=True,
         help="Folder written by a panderm training or build command."),
    _row("--resume", dest="resume", is_flag=True, type=click.BOOL, default=False,
         help="Continue the interrupted run in --out; refused when its inputs or weights changed."),
    _row("--precision", dest="precision", type=click.Choice(PRECISION_CHOICES), default="auto",
         help="auto = bf16 on CUDA and on CPUs with AMX/AVX512-BF16, else fp32; fp16 needs CUDA."),
    _row("--device", dest="device", type=click.STRING, help="cpu, cuda or cuda:N [default: cuda if available]."),
    _row("--batch-size", dest="batch_size", type=click.IntRange(min=1), default=64, help="Samples per batch."),
    _row("--workers", dest="workers", type=click.IntRange(min=0),
         help="Data-loading workers [default: min(2, CPUs)]."),
    _row("--seed", dest="seed", type=click.INT, default=0, help="Random seed (splits, initialisation, bootstrap)."),
    _row("--bootstrap", dest="bootstrap", type=click.IntRange(min=0), default=1000,
         help="Bootstrap replicates for the 95% CIs (0 = none)."),
    _row("-q", "--quiet", dest="quiet", is_flag=True, type=click.BOOL, default=False,
         help="No progress bars or notes; only the summary (bars also hide when stderr is not a terminal)."),
    _row("--json", dest="as_json", is_flag=True, type=click.BOOL, default=False,
         help="Print the result as JSON on stdout instead of the human summary."),
)}


#: Options renamed in 0.1 so that each word means one thing: ``(command or "*", old) -> the new spelling``.
#: The CLI answers an old name with the new one instead of a bare "No such option".
RENAMED: dict[tuple[str, str], str] = {
    ("*", "--steps"): "--max-steps (optimizer steps) or, in align-pair and change train, --preprocess",
    ("pretrain", "--steps"): "--max-steps",
    ("align-pair", "--steps"): "--preprocess",
    ("change train", "--steps"): "--preprocess",
    ("*", "--finetune-run"): "--run",
    ("*", "--bundle"): "--run",
    ("*", "--classifier"): "--run",
    ("*", "--task"): "--head (the probe head)",
    ("*", "--init-weights"): "--weights",
    ("*", "--lesions"): "--csv",
    ("survival", "--split"): "--risk-cutoff (--split always names rows of the CSV's split column)",
    ("align-pair", "--preset"): "--align-preset",
    ("classifier build", "--demo"): "--mark-demo",
    ("evaluate", "--binary"): "--binary-metrics",
    ("tbp train", "--head"): "--risk-head",
}


def renamed_option(command: str, option: str) -> str | None:
    """The new spelling of ``option`` in ``command`` (``"change train"``) if it was renamed, else ``None``."""
    return RENAMED.get((command, option)) or RENAMED.get(("*", option))


def shared_option(name: str, *, help: str | None = None, default: Any = ..., why: str | None = None,
                  required: bool | None = None, from_recipe: bool = False, multiple: bool = False) -> Callable:
    """A Click option built from its ``SHARED`` row; ``help`` may say more about this command's use."""
    row = SHARED[name]
    if default is not ... and default != row.default and not why:
        raise ValueError(f"{name}: a command-specific default needs why= (shown in the help)")
    text = help or row.help
    kwargs: dict[str, Any] = {"help": text, **row.extra}
    if multiple:  # repeatable: the type is the row's, the default is empty
        return _decorator(row, {**kwargs, "type": row.type, "multiple": True, "required": bool(required)}, name, None)
    if row.is_flag:
        kwargs.update(is_flag=True, default=False)
    else:
        kwargs["type"] = row.type
        kwargs["required"] = row.required if required is None else required
        value = None if from_recipe else (row.default if default is ... else default)
        if not kwargs["required"]:
            kwargs["default"] = value
        if from_recipe:
            kwargs["help"] = f"{text} [default: the recipe's]"
        elif why:
            kwargs["help"] = f"{text} [default: {why}]" if value is None else f"{text} [default: {value}, {why}]"
        elif value is not None and not kwargs["required"]:
            kwargs["show_default"] = True

    return _decorator(row, kwargs, name, "the recipe's" if from_recipe else why)


def _decorator(row: SharedOption, kwargs: dict, name: str, why: str | None) -> Callable:
    def decorate(f: Callable) -> Callable:
        f = click.option(*row.decls, row.dest, **kwargs)(f)
        param = f.__click_params__[-1]
        param.panderm_shared = name  # read by the conventions test
        param.panderm_default_why = why
        return f

    return decorate


def _named(name: str) -> Callable[..., Callable]:
    def factory(*args, **kwargs) -> Callable:
        if args:  # @batch_size(16, why=...)
            kwargs["default"] = args[0]
        return shared_option(name, **kwargs)

    factory.__name__ = name.lstrip("-").replace("-", "_")
    factory.__doc__ = f"The shared ``{name}`` option: {SHARED[name].help}"
    return factory


csv = _named("--csv")
root = _named("--root")
features = _named("--features")
model = _named("--model")
weights = _named("--weights")
random_init = _named("--random-init")
out = _named("--out")
run = _named("--run")
resume = _named("--resume")
precision = _named("--precision")
device = _named("--device")
batch_size = _named("--batch-size")
workers = _named("--workers")
seed = _named("--seed")
bootstrap = _named("--bootstrap")
quiet = _named("--quiet")
json_output = _named("--json")


def encoder(default_model: str = DEFAULT_MODEL, *, why: str | None = None, from_recipe: bool = False,
            model_help: str | None = None) -> Callable:
    """``--model``, ``--weights`` and ``--random-init`` together, as every encoder-loading command takes them."""
    model_kwargs = {"help": model_help, "from_recipe": from_recipe}
    if default_model != DEFAULT_MODEL:
        model_kwargs.update(default=default_model, why=why)

    def decorate(f: Callable) -> Callable:
        for add in (random_init(), weights(), model(**model_kwargs)):
            f = add(f)
        return f

    return decorate


def echo_json(obj: Any) -> None:
    """The ``--json`` output: one JSON document on stdout (non-finite numbers as null)."""
    import json

    from panderm.io import jsonable

    click.echo(json.dumps(jsonable(obj), indent=2))
