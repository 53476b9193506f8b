"""A run folder is always either resumable or restartable, and never someone else's.

``prepare_out`` decides what ``--out FOLDER`` may do with an existing folder: a new or empty
folder is used; a scorematch run with a checkpoint is refused (resume it instead); a run that
stopped before its first checkpoint is started again, after saying so; a folder that is not a
scorematch run is refused unless ``force``, which keeps every file there and renames those a run
would write (``config.json``, ``loss.csv``, ...) to ``NAME.orig``. ``resume_config`` checks what
``--resume`` may change and records the changes in the config's history. ``session`` holds the
folder's lock for the whole run and removes the temporary files killed processes left behind.

``claim_file`` and ``claim_folder`` are the same rule for the ``--out`` of sample, eval, report
and plot: an existing file, or a non-empty folder that scorematch did not write, is refused
unless ``force``, which renames what is in the way to ``NAME.orig`` (never deletes it).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scorematch.errors import CheckpointError, ConfigError, ScoreMatchError
from scorematch.files import (
    atomic_write,
    ensure_folder,
    folder_lock,
    is_temporary,
    remove_files,
    remove_stale_temporaries,
    rename_aside,
)
from scorematch.run.folder import checkpoint as ckpt
from scorematch.run.folder import manifest
from scorematch.run.folder.config import RESUME_SETTINGS, TrainConfig
from scorematch.run.folder.validate import note
from scorematch.run.system import distributed as D

#: what a run writes into its folder; --force renames the user's files of these names
RUN_FILES = ("config.json", "run.json", manifest.MANIFEST, "weights.safetensors", "loss.csv", "checkpoints",
             "samples", "plots", "tensorboard", "eval.json", "report.html", "samples.npz", "samples.png")
_OWN = (".lock", ".write-test")


def _newest_step(run: Path) -> int | None:
    stems = ckpt.list_checkpoints(run / "checkpoints")
    return ckpt.step_of(stems[-1]) if stems else None


def _started(run: Path) -> bool:
    """Whether the run wrote a checkpoint or its weights (so restarting it would lose work)."""
    return _newest_step(run) is not None or (run / "weights.safetensors").exists() or bool(
        ckpt.orphans(run / "checkpoints"))


def _is_run(run: Path) -> bool:
    try:
        manifest.run_config(run)
    except ScoreMatchError:
        return False
    return True


def prepare_out(run: Path, force: bool) -> None:
    """What ``--out run`` may do with what is already there (see the module docstring)."""
    if not run.exists() and not run.is_symlink():
        return
    if not run.is_dir():
        raise ConfigError(f"--out {run} exists and is not a folder; choose another --out")
    entries = sorted(p.name for p in run.iterdir()
                     if p.name not in _OWN and not is_temporary(p.name))
    if not entries:
        return
    if _is_run(run):
        if _started(run):
            step = _newest_step(run)
            at = f" (newest checkpoint: step {step})" if step is not None else ""
            raise ConfigError(f"{run} already holds a run{at}; resume it with --resume {run} or pick another --out")
        print(f"scorematch: {run} holds a run that stopped before its first checkpoint; starting it again",
              file=sys.stderr)
        return
    if not force:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ConfigError(
            f"{run} is not empty ({shown}) and is not a scorematch run; choose a new or empty --out folder, or "
            "pass --force to train into it (nothing there is deleted: files named like a run's are renamed NAME.orig)"
        )
    for name in RUN_FILES:
        new = rename_aside(run, name)
        if new is not None:
            print(f"scorematch: --force: kept {run / name} as {run / new}", file=sys.stderr)


def resume_config(run: Path, overrides: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any], bool]:
    """(config, the previous values of the settings that change, whether to start again) for
    ``--resume run`` with ``overrides``.

    Only RESUME_SETTINGS may change; ``steps`` may not go below the newest checkpoint. A run
    with neither a checkpoint nor weights (it stopped during its set-up) is started again."""
    if not run.is_dir():
        raise CheckpointError(f"no config at {run / 'config.json'}: {run} does not exist; pass the --out folder "
                              "of `scorematch train`")
    base = manifest.run_config(run)
    bad = sorted(set(overrides) - set(RESUME_SETTINGS))
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in bad)
        allowed = ", ".join("--" + k.replace("_", "-") for k in RESUME_SETTINGS if k != "progress")
        raise ConfigError(f"{flags} cannot change when resuming (the run would become another run); "
                          f"settings that can: {allowed}")
    newest = _newest_step(run)
    steps = overrides.get("steps", base.steps)
    if newest is not None and isinstance(steps, int) and steps < newest:
        raise ConfigError(f"{run} has trained {newest} steps (newest checkpoint); --steps {steps} would go back: "
                          f"give --steps {newest} or more")
    if not _started(run):
        note(f"{run} has no checkpoint (it stopped before its first one); starting it again from step 0 with its "
             "config.json")
        return base.replace(**overrides), {}, True
    if newest is None:
        raise CheckpointError(f"{run} has no checkpoint to resume from (its checkpoints/ folder is empty or gone); "
                              "train a new run with another --out")
    was = {k: getattr(base, k) for k, v in overrides.items() if k != "progress" and getattr(base, k) != v}
    return base.replace(**overrides), was, False


def resume_advice(run: Path, lr: float) -> str:
    """Where a failed run can continue from, and the settings that may change when it does."""
    stems = ckpt.list_checkpoints(run / "checkpoints")
    flags = ", ".join("--" + k.replace("_", "-") for k in RESUME_SETTINGS if k not in ("progress", "device"))
    if not stems:
        return f"{run} holds no checkpoint yet; start it again with the same --out and a lower --lr"
    newest = stems[-1]
    return (f"The last good checkpoint is step {ckpt.step_of(newest)} ({newest}.safetensors); continue from it "
            f"with changed settings, e.g. `scorematch train --resume {run} --lr {lr / 10:g}` "
            f"(settings that can change on resume: {flags})")


def _clean(run: Path) -> None:
    removed = remove_stale_temporaries(run, recursive=False)
    for sub in ("checkpoints", "samples", "plots"):
        if (run / sub).is_dir() and not (run / sub).is_symlink():
            removed += remove_stale_temporaries(run / sub, recursive=False)
    orphans = ckpt.orphans(run / "checkpoints")
    if orphans:
        remove_files(run / "checkpoints", orphans, root=run)
    if removed or orphans:
        print(f"scorematch: removed {len(removed) + len(orphans)} file(s) left by an interrupted write in {run}",
              file=sys.stderr)


@contextlib.contextmanager
def session(run: Path, ctx: D.DistContext, new: bool, force: bool) -> Iterator[None]:
    """Rank 0 prepares ``run`` (``prepare_out`` when ``new``), checks it is writable, takes its
    lock for the whole block and removes stale temporaries; an error there ends every rank."""
    with contextlib.ExitStack() as stack:
        def begin() -> None:
            if new:
                prepare_out(run, force)
            ckpt.check_writable(run)
            stack.enter_context(folder_lock(run))
            _clean(run)

        D.on_main(begin, ctx)
        yield


#: the file ``claim_folder`` leaves in a folder it prepared, so that the next command may write there again
FOLDER_MARK = ".scorematch-output"


def claim_file(path: Path, force: bool, flag: str = "--out") -> None:
    """An output file the user named: refused when something is there already (ConfigError),
    or with ``force`` that is renamed to NAME.orig (said on stderr)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        raise ConfigError(f"{flag} {path} is a folder; give a file name (of a new file)")
    if not force:
        raise ConfigError(f"{flag} {path} exists and scorematch never overwrites a file of yours: choose a new name, "
                          f"or pass --force to keep the old file as {path.name}.orig and write {path}")
    new = rename_aside(path.parent, path.name)
    note(f"--force: kept {path} as {path.parent / str(new)}")


def precheck_file(path: Path, force: bool, flag: str = "--out") -> None:
    """``claim_file``'s refusal before any work is done; with ``force`` nothing yet (``claim_file``
    renames what is in the way when the file is written)."""
    if not force:
        claim_file(path, False, flag)


def claim_folder(folder: Path, force: bool, names: tuple[str, ...], flag: str = "--out") -> None:
    """An output folder the user named: used when new, empty or written by scorematch before
    (it holds ``FOLDER_MARK``); else refused (ConfigError), or with ``force`` the files of
    ``names`` there are renamed to NAME.orig. The folder is then created and marked."""
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        if not folder.is_dir():
            raise ConfigError(f"{flag} {folder} exists and is not a folder; choose another {flag}")
        entries = sorted(p.name for p in folder.iterdir() if not is_temporary(p.name))
        if entries and FOLDER_MARK not in entries:
            if not force:
                shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
                raise ConfigError(f"{flag} {folder} is not empty ({shown}) and was not written by scorematch; choose "
                                  "a new or empty folder, or pass --force (nothing there is deleted: files named like "
                                  "the ones written are renamed NAME.orig)")
            for name in names:
                new = rename_aside(folder, name)
                if new is not None:
                    note(f"--force: kept {folder / name} as {folder / new}")
    ensure_folder(folder)
    atomic_write(folder / FOLDER_MARK, b"written by scorematch; its next output may replace the files here\n")
