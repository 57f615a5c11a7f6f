"""The ``panderm`` Click app: plugin commands, lazy loading, one place for error translation."""

from __future__ import annotations

import os
import sys

import click

from panderm.config import debug_enabled
from panderm_cli.lazy import LazyGroup

EPILOG = """\b
Examples:
  panderm models
  panderm extract images/ --model panderm_large_patch16_224 --weights panderm-large --out feats/
  panderm probe --features feats/ --csv data.csv --out probe/

Set PANDERM_DEBUG=1 to see full tracebacks."""


def echo_error(exc) -> None:
    """Print a PandermError as the one-paragraph message users see (names from data made terminal-safe)."""
    from panderm_cli.format import printable

    click.secho(f"Error: {printable(exc.message)}", fg="red", err=True)
    if exc.hint:
        click.echo(f"Hint: {printable(exc.hint)}", err=True)


def command_path(exc: BaseException) -> str | None:
    """The subcommand that raised ``exc`` (``"slide tile"``), from the deepest Click context in its traceback."""
    path, tb = None, exc.__traceback__
    while tb is not None:
        ctx = tb.tb_frame.f_locals.get("ctx")
        if isinstance(ctx, click.Context):
            path = ctx.command_path
        tb = tb.tb_next
    words = (path or "").split()[1:]
    return " ".join(words) or None


def missing_extra(exc: BaseException):
    """A clean PandermError naming the pip extra when ``exc`` (or its cause) is a missing optional module."""
    from panderm.extras import missing_extra_error

    seen = exc
    for _ in range(5):  # also a ModuleNotFoundError re-raised as the cause of another error
        if seen is None:
            return None
        err = missing_extra_error(seen, command_path(exc))
        if err is not None:
            return err
        seen = seen.__cause__ or seen.__context__
    return None


def _renamed_or(exc: click.exceptions.NoSuchOption) -> click.ClickException:
    """A usage error naming the new spelling when ``exc`` is an option renamed in 0.1, else ``exc`` itself."""
    from panderm_cli.options import renamed_option

    command = " ".join((exc.ctx.command_path if exc.ctx else "").split()[1:])
    new = renamed_option(command, exc.option_name)
    if new is None:
        return exc
    return click.UsageError(f"No such option: {exc.option_name} (renamed: use {new})", ctx=exc.ctx)


class PandermGroup(LazyGroup):
    """Root group: turns expected errors into one clean message."""

    def invoke(self, ctx: click.Context):
        from panderm.errors import PandermError

        try:
            return super().invoke(ctx)
        except PandermError as exc:
            if debug_enabled():
                raise
            echo_error(exc)
            ctx.exit(2)
        except click.exceptions.NoSuchOption as exc:
            raise _renamed_or(exc) from None
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except BrokenPipeError:  # `panderm plugins | head`: the reader left, nothing to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(141)
        except Exception as exc:  # a bug: keep the message short unless debugging
            if debug_enabled():
                raise
            missing = missing_extra(exc)
            if missing is not None:  # an optional extra is not installed: say which one
                echo_error(missing)
                ctx.exit(2)
            first = str(exc).splitlines()[0] if str(exc) else ""
            click.secho(f"Internal error: {type(exc).__name__}: {first}", fg="red", err=True)
            click.echo("This is a bug in panderm or a plugin. Re-run with PANDERM_DEBUG=1 for the traceback.",
                       err=True)
            ctx.exit(1)


def build_cli() -> PandermGroup:
    """Create the root group and let every plugin add its commands."""
    from panderm import __version__

    @click.group(cls=PandermGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="panderm")
    def cli() -> None:
        """PanDerm dermatology foundation-model toolkit.

        Extract encoder features, run linear probes, and more through plugins.
        """

    cli.add_lazy_command("plugins", "panderm_cli.host_commands:plugins_cmd",
                         "List plugins and what each registered (JSON).")
    cli.add_lazy_command("doctor", "panderm_cli.host_commands:doctor_cmd",
                         "Show versions, hardware (bf16/AMX, CUDA), optional extras, weights.")
    _register_plugin_commands(cli)
    return cli


def _register_plugin_commands(cli: PandermGroup) -> None:
    from panderm.errors import PandermError
    from panderm.plugins import get_plugin_manager, record_failure

    pm = get_plugin_manager()
    for impl in pm.hook.register_commands.get_hookimpls():
        cli.current_plugin = impl.plugin_name
        try:
            impl.function(cli=cli)
        except PandermError:
            raise
        except Exception as exc:  # one broken plugin must not take the CLI down
            record_failure(impl.plugin_name, "register_commands", exc)
        finally:
            cli.current_plugin = None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from panderm.errors import PandermError

    try:
        cli = build_cli()
    except PandermError as exc:  # e.g. two plugins claiming one command name
        if debug_enabled():
            raise
        echo_error(exc)
        sys.exit(2)
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="panderm")
