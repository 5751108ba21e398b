"""The ``virnucpro`` command: a thin layer of options over the library's stage functions.

Each subcommand lives in its own module of this package, registered below; it parses options
and calls one library function, imported when the command runs (so ``--help``, ``--version``
and usage errors answer without loading torch). Errors a user can fix print one line and exit
1; exit 2 means "partial result" and is never used for usage errors.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import NoReturn

import click

from virnucpro import __version__
from virnucpro.cli.checkpoint import convert_checkpoint, fetch_classifier
from virnucpro.cli.classify import classify_command
from virnucpro.cli.embed import embed_dna, embed_esm
from virnucpro.cli.evaluate import evaluate_command, evaluate_embedded_command, evaluate_predictions_command
from virnucpro.cli.fetch import fetch_model_command
from virnucpro.cli.predict import predict_command
from virnucpro.cli.prepare import prepare_command
from virnucpro.cli.summarize import summarize_command
from virnucpro.cli.testmodels import make_test_models_command
from virnucpro.cli.train import fit_command, prepare_labelled_command, train_command
from virnucpro.contracts import EXIT_FAILED, EXIT_TERMINATED
from virnucpro.errors import Terminated, VirnucproError, error_line, raise_interruption_behind


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="virnucpro")
def cli() -> None:
    """Identify viral sequences in reads and contigs (VirNucPro, fast on many GPUs)."""


for _command in (
    prepare_command,
    embed_dna,
    embed_esm,
    classify_command,
    predict_command,
    summarize_command,
    prepare_labelled_command,
    fit_command,
    train_command,
    evaluate_command,
    evaluate_embedded_command,
    evaluate_predictions_command,
    convert_checkpoint,
    fetch_classifier,
    fetch_model_command,
    make_test_models_command,
):
    cli.add_command(_command)

_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click 8.1 prints the help itself


def _report(message: str, verbose: bool) -> None:
    """One error line on stderr; with --verbose the traceback first."""
    if verbose:
        import traceback

        traceback.print_exc()
    # A file name's bytes that are not UTF-8 (surrogates in Python) are shown escaped, not lost in an encoding error.
    from virnucpro.atomic import as_written

    click.echo(as_written(f"virnucpro: error: {message}"), err=True)


def _raise_terminated(signum: int, _frame: object) -> None:
    Terminated.received = True
    raise Terminated()


_TERMINATED_LINE = "virnucpro: terminated (SIGTERM); finished outputs are kept: --resume continues"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and map every outcome to the documented exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or "-v" in args
    Terminated.received = False
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        code, stopped = _run(args, verbose)
    else:
        try:
            code, stopped = _run(args, verbose)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if Terminated.received and code != EXIT_TERMINATED:  # the exception was swallowed on its way up
        click.echo(_TERMINATED_LINE, err=True)
        code, stopped = EXIT_TERMINATED, True
    if argv is None:
        if stopped:
            _exit_at_once(code)
        sys.exit(code)
    return int(code)


def _exit_at_once(code: int) -> NoReturn:
    """End a stopped run now, without waiting for batches still running in the CPU engine's
    threads (nobody collects them; on a big model one can take minutes). The run has already
    unwound (workers stopped, temporary files removed); output streams and logs are flushed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(args: list[str], verbose: bool) -> tuple[int, bool]:
    """The command's exit code, and whether the run was stopped (SIGTERM, Ctrl-C)."""
    try:
        return _run_command(args, verbose), False
    except Terminated:
        click.echo(_TERMINATED_LINE, err=True)
        return EXIT_TERMINATED, True
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo("virnucpro: interrupted; finished outputs are kept: --resume continues", err=True)
        return EXIT_FAILED, True


def _run_command(args: list[str], verbose: bool) -> int:
    """The command's exit code; every exception a user can cause becomes one line on stderr.

    An error raised while an interruption unwound (cleanup that failed on its way) is that
    interruption, not the user's mistake: it is raised again for :func:`_run`.
    """
    try:
        code = cli.main(args=args, prog_name="virnucpro", standalone_mode=False)
    except _NO_ARGS_IS_HELP as error:  # bare `virnucpro` (click >= 8.2): the help, not an error
        click.echo(error.ctx.get_help() if error.ctx else error.format_message())
        code = 0
    except click.ClickException as error:  # usage errors: one line, exit 1 (2 means partial)
        click.echo(f"virnucpro: error: {' '.join(error.format_message().split())}", err=True)
        code = EXIT_FAILED
    except VirnucproError as error:
        raise_interruption_behind(error)
        _report(error_line(error), verbose)
        code = error.exit_code
    except OSError as error:  # the file system refused (a path that is a file, a full disk, permissions)
        raise_interruption_behind(error)
        _report(error_line(error), verbose)
        code = EXIT_FAILED
    except Exception as error:  # a bug (shown with its traceback), unless an interruption is behind it
        raise_interruption_behind(error)
        raise
    return 0 if code is None else int(code)
