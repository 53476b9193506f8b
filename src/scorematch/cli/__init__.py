"""Command-line interface: ``scorematch train | sample | eval | plot | report | ema | impute``.

Every scorematch error is printed as one line ("scorematch: error: ...") with exit code 2
(under several processes by rank 0 only); a run stopped by SIGINT/SIGTERM/SIGHUP/SIGQUIT exits with 128 + the
signal number after its checkpoint; anything else is a bug and keeps its traceback. Nothing
imports torch before the arguments are parsed, so ``--help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from scorematch.cli.commands import cmd_ema, cmd_eval, cmd_plot, cmd_report, cmd_sample, cmd_train
from scorematch.cli.parser import TRAIN_HELP, build_parser
from scorematch.errors import ScoreMatchError

__all__ = ["TRAIN_HELP", "build_parser", "main", "run"]


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings as one line on stderr: ``scorematch: warning: ...``."""
    print(f"scorematch: warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from scorematch.run.system.launcher import ARGV_ENV

    if argv is None and len(sys.argv) == 1 and ARGV_ENV in os.environ:
        argv = json.loads(os.environ[ARGV_ENV])
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "nproc", None) is not None and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        from scorematch.run.system.launcher import check_nproc, launch

        try:
            if check_nproc(args.nproc) > 1:  # the processes get the same arguments and ignore --nproc
                return launch(args.nproc, list(sys.argv[1:] if argv is None else argv))
        except ScoreMatchError as err:
            _report_error(err, 0)
            return 2
    from scorematch.cli.tables import cmd_impute

    handler = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "plot": cmd_plot,
               "report": cmd_report, "ema": cmd_ema, "impute": cmd_impute}[args.command]
    rank = int(os.environ.get("RANK", "0"))
    import warnings

    trust = contextlib.nullcontext()
    if getattr(args, "trust_model_module", False):
        from scorematch.run.build.user_model import trusting

        trust = trusting(True)
    try:
        with warnings.catch_warnings(), trust:
            warnings.showwarning = _one_line_warnings
            return handler(args)
    except ScoreMatchError as err:
        _report_error(err, rank)
        return 2
    except (MemoryError, RuntimeError) as err:
        if not _out_of_memory(err):
            raise
        _report_error(ScoreMatchError(
            f"out of memory ({' '.join(str(err).split())[:160]}): the size checks passed, but this machine had less "
            "memory free; use a smaller --n or --batch-size, or free memory"), rank)
        return 2
    except KeyboardInterrupt:
        if rank == 0:
            print("scorematch: interrupted", file=sys.stderr)
        return 130


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocator's refusal (a MemoryError, torch's out-of-memory errors)."""
    text = str(err)
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or \
        "can't allocate memory" in text or "out of memory" in text.lower()


def run() -> None:
    """The ``scorematch`` program: ``main()``, then exit with its status. A process of a
    multi-process run (WORLD_SIZE > 1) flushes its output and leaves with ``os._exit``: the
    threads of gloo's process group, already left, could otherwise abort the interpreter's
    finalisation (SIGABRT, "terminate called without an active exception")."""
    status = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def _report_error(err: ScoreMatchError, rank: int) -> None:
    """One line on stderr; under several processes rank 0 prints, the others hand their message
    to the launcher (which prints it when rank 0 had none) or, under torchrun, print only the
    errors that rank 0 may not have seen (a lost peer)."""
    from scorematch.run.system.distributed import CollectiveError
    from scorematch.run.system.launcher import ERRORS_ENV

    msg = "scorematch: error: " + " ".join(str(err).split("\n"))
    if rank == 0 or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        print(msg, file=sys.stderr)
    elif os.environ.get(ERRORS_ENV):
        from scorematch.files import atomic_write

        try:
            atomic_write(Path(os.environ[ERRORS_ENV]) / f"rank{rank}.txt", msg.encode())
        except ScoreMatchError:
            print(msg, file=sys.stderr)
    elif isinstance(err, CollectiveError):
        print(msg, file=sys.stderr)


if __name__ == "__main__":
    run()
