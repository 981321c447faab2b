"""A run's folder: config.json, logs/, checkpoints/, samples/, models/, metrics.json.

Everything a run writes lives under one directory so that TensorBoard, `--resume` and the later stages
(`sample`, `evaluate`, ...) find it without extra flags.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from common.cli import PYTHON, explicit_flags
from common.errors import UserError

# Flags that describe how to run, not what is trained: a resumed run may change them freely.
_NOT_SAVED = {"resume", "run_dir", "stage", "num", "out", "overwrite", "input", "output", "generator", "image"}


class Run:
    """Paths of one run directory."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.logs = self.root / "logs"
        self.checkpoints = self.root / "checkpoints"
        self.samples = self.root / "samples"
        self.models = self.root / "models"
        self.config_file = self.root / "config.json"
        self.metrics_file = self.root / "metrics.json"
        self.created = False  # made by this process (so a failed start may remove it again)
        self.pending_config: dict[str, Any] | None = None

    def create(self) -> "Run":
        probe = self.root / ".write-test"
        try:  # fail before training, not at the first checkpoint an hour later
            for folder in (self.logs, self.checkpoints, self.samples, self.models):
                folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"x" * 4096)
            probe.unlink()
        except OSError as error:
            raise UserError(f"cannot write to the run directory {self.root} ({error.strerror})") from None
        return self

    def model_path(self, name: str) -> Path:
        return self.models / f"{name}.keras"

    def has_checkpoint(self) -> bool:
        return (self.checkpoints / "checkpoint").exists()

    def has_any_checkpoint(self) -> bool:
        """A checkpoint of any of the run's phases (e.g. SRGAN's pretrain/checkpoints)."""
        return self.root.is_dir() and any(self.root.rglob("checkpoints/checkpoint"))

    def epochs_trained(self) -> int:
        """The last epoch in history.csv (0 before the first): the step evaluations and explorations log at."""
        history = self.root / "history.csv"
        rows = history.read_text().splitlines()[1:] if history.exists() else []
        return int(rows[-1].split(",")[0]) if rows else 0

    def has_results(self) -> bool:
        """Anything worth keeping: a checkpoint or a saved model."""
        return self.has_any_checkpoint() or (self.root.is_dir() and any(self.root.rglob("models/*.keras")))

    def commit_config(self) -> None:
        """Writes config.json with the flags this invocation settled on (after a resume has succeeded)."""
        if self.pending_config is not None:
            self.write_json(self.config_file, self.pending_config)
            self.pending_config = None

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        """Strict JSON for any reader: a NaN or infinity becomes null, with the reason under "nulls"."""
        nulls: dict[str, str] = {}
        clean = _finite(data, "", nulls)
        if nulls:
            clean["nulls"] = {**clean.get("nulls", {}), **nulls}
        atomic_write_text(path, json.dumps(clean, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")

    def read_config(self) -> dict[str, Any]:
        if not self.config_file.exists():
            raise UserError(f"{self.root} is not a run directory (no config.json in it)")
        return json.loads(self.config_file.read_text())

    def phase(self, name: str, models_here: bool = True) -> "Run":
        """A training phase of this run in its own folder <run>/<name> (its checkpoints, logs, samples,
        history.csv), made now: SRGAN's pretraining, Age-cGAN's encoder and optimize stages. Its config is this
        run's (commit_config writes <run>/config.json), and with models_here=False it saves its models beside
        the run's (<run>/models), where the later stages look for them."""
        phase = _Phase(self.root / name, self)
        if not models_here:
            phase.models = self.models
        return phase.create()

    def __str__(self) -> str:
        return str(self.root)


class _Phase(Run):
    def __init__(self, root: Path, run: Run) -> None:
        super().__init__(root)
        self.run = run

    def commit_config(self) -> None:  # fit_gan calls it after the phase's restore: the whole run's config.json
        self.run.commit_config()


def _finite(value: Any, where: str, nulls: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}.{k}" if where else str(k), nulls) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{where}[{i}]", nulls) for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        nulls[where] = f"the computation gave {value} (not a number JSON can hold)"
        return None
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Writes to a temporary file beside `path`, then renames: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_file(path: str | os.PathLike, overwrite: bool = False, inputs: Sequence[str | os.PathLike] = (),
                flag: str = "--out") -> Path:
    """The one rule for every file a user names as output: never a folder, never an input, and an existing
    file only with --overwrite. Checked before any work, so a refusal loses nothing."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name inside it, e.g. {path / 'out.png'}")
    for source in inputs:
        if source and path.exists() and Path(source).exists() and os.path.samefile(path, source):
            raise UserError(f"{flag} {path} is the input file; an input is never written over: choose another name")
    if path.exists() and not overwrite:
        raise UserError(f"{flag} {path} already exists; pass --overwrite to replace it, or choose another name")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"{flag} {path}: {path.parent} is a file, not a folder")
    return path


def latest_run(runs_root: str | os.PathLike, chapter: str, need: str | None = None) -> Run | None:
    """The newest run of a chapter that holds something (a checkpoint or a saved model; `need`: that file).

    A folder left by a run that failed or was interrupted before its first checkpoint is never "latest".
    """
    base = Path(runs_root) / chapter
    if not base.is_dir():
        return None
    runs = [Run(p) for p in base.iterdir() if (p / "config.json").exists()]
    runs = [r for r in runs if (r.root / need).exists()] if need else [r for r in runs if r.has_results()]
    return max(runs, key=lambda r: r.config_file.stat().st_mtime, default=None)


# The training run this process opened, for the message after an interrupt (see interrupted()).
_current: Run | None = None


def open_run(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str],
             training: bool, older_runs: Mapping[str, Any] | None = None) -> Run:
    """Resolves the run directory for this invocation.

    A new training run gets a fresh folder and its config.json at once. `--resume` (or `--run-dir` naming an
    existing run, for a later stage such as SRGAN's train after pretrain) reopens one and restores its saved
    flags (flags typed now win); its config.json is rewritten only by `Run.commit_config()`, which the
    training loop calls once the checkpoint has been restored, so a failed resume changes nothing. Other
    stages use `--run-dir` or the chapter's latest run.

    `older_runs` {flag: value}: flags added after some runs were saved, with what those runs trained with (the
    behaviour before the flag); a reopened run whose config.json lacks one takes that value, not the flag's
    new default, unless it is typed now.
    """
    global _current
    if args.resume is not None:
        if args.run_dir and args.resume != "latest":
            raise UserError("give the run to resume either as --resume DIR or as --run-dir DIR, not both")
        run = _find_run(args, args.run_dir or (None if args.resume == "latest" else args.resume), resume=True)
        _restore_flags(run, args, parser, argv, older_runs)
    elif training:
        run = _new_or_later_stage(args, parser, argv, older_runs)
    else:
        return _find_run(args, args.run_dir)
    existed = run.root.exists()
    run.create()
    if not run.config_file.exists():
        run.created = not existed
        run.pending_config = _config_of(args)
        run.commit_config()
    args.run_dir = str(run.root)
    _current = run
    return run


Data = TypeVar("Data")


def open_training_run(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str],
                      load: Callable[[], Data], older_runs: Mapping[str, Any] | None = None) -> tuple[Run, Data]:
    """open_run for training, with the data `load()` reads from args. A new run's data are loaded (and a bad
    --data refused) before its folder is made; a resumed run's after open_run has restored its saved flags, so
    that it goes on with the data it trained on, not the flags' defaults."""
    if args.resume is None:
        data = load()
        return open_run(args, parser, argv, training=True, older_runs=older_runs), data
    run = open_run(args, parser, argv, training=True, older_runs=older_runs)
    return run, load()


def _config_of(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_SAVED}


def _new_or_later_stage(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str],
                        older_runs: Mapping[str, Any] | None) -> Run:
    if not args.run_dir:
        run = Run(Path(args.runs_root) / args.chapter / time.strftime("%Y%m%d-%H%M%S"))
        while run.root.exists():  # two runs started in the same second
            run = Run(f"{run.root}-1")
        return run
    run = Run(args.run_dir)
    if run.root.exists() and not run.root.is_dir():
        raise UserError(f"--run-dir {run} is a file, not a folder; choose a new or empty folder")
    if run.config_file.exists():
        if run.has_checkpoint():
            raise UserError(f"{run} already holds a trained run; continue it with --resume {run} "
                            "or choose another --run-dir")
        _restore_flags(run, args, parser, argv, older_runs)  # a later stage of this run (e.g. train after pretrain)
    elif run.root.is_dir() and any(run.root.iterdir()):
        raise UserError(f"--run-dir {run} is a folder with other files in it and not a run; choose a new or "
                        "empty folder (nothing in it was changed)")
    return run


def _restore_flags(run: Run, args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str],
                   older_runs: Mapping[str, Any] | None = None) -> None:
    """The run's saved flags under the ones typed now; its config.json is rewritten at commit_config()."""
    saved = run.read_config()
    _check_chapter(run, saved, args.chapter)
    typed = explicit_flags(parser, argv)
    for key, value in {**(older_runs or {}), **saved}.items():
        if key not in typed and key not in _NOT_SAVED and hasattr(args, key):
            setattr(args, key, value)
    run.pending_config = _config_of(args)


def use_saved_flags(run: Run, args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str],
                    keys: Sequence[str]) -> None:
    """A later stage of a finished run (sample, evaluate, ...) takes `keys` (its data and network flags) from the
    run's config.json, so it needs no flags repeated; a flag typed now wins."""
    typed = explicit_flags(parser, argv)
    saved = run.read_config()
    for key in keys:
        if key in saved and key not in typed:
            setattr(args, key, saved[key])


def _check_chapter(run: Run, config: dict[str, Any], chapter: str) -> None:
    theirs = config.get("chapter")
    if theirs and theirs != chapter:
        raise UserError(f"{run} is a run of the {theirs} chapter, not {chapter}; use "
                        f"{PYTHON} chapters/{theirs}/main.py --resume {run} (nothing was changed)")


def _find_run(args: argparse.Namespace, path: str | None, resume: bool = False) -> Run:
    if path:
        run = Run(path)
        if not run.root.is_dir():
            raise UserError(f"run directory {run} does not exist")
        _check_chapter(run, run.read_config(), args.chapter)
        if resume and not run.has_any_checkpoint():
            raise UserError(f"{run} has no checkpoint to resume from; start it with "
                            f"{PYTHON} chapters/{args.chapter}/main.py --run-dir {run}")
        return run
    run = latest_run(args.runs_root, args.chapter)
    if resume and run is not None and not run.has_any_checkpoint():
        run = None
    if run is None:
        raise UserError(f"no {'resumable ' if resume else ''}run of {args.chapter} under "
                        f"{args.runs_root}/{args.chapter}; train one first with "
                        f"{PYTHON} chapters/{args.chapter}/main.py, or pass --run-dir")
    return run


def interrupted(signal_name: str = "Ctrl-C") -> str:
    """What an interrupt leaves: the run to resume, or nothing (an empty run folder we made is removed)."""
    run = _current
    if run is None:
        return f"interrupted ({signal_name})"
    if run.has_any_checkpoint():
        return (f"interrupted ({signal_name}); continue this run with "
                f"{PYTHON} chapters/{_chapter_of(run)}/main.py --resume {run}")
    if discard_if_empty():
        return f"interrupted ({signal_name}) before the first checkpoint: nothing to resume (removed {run})"
    return f"interrupted ({signal_name}) before this run's first checkpoint: nothing to resume"


def discard_if_empty() -> bool:
    """Removes the run folder this process created when it holds no checkpoint or model (a failed start)."""
    global _current
    run = _current
    if run is None or not run.created or run.has_results():
        return False
    shutil.rmtree(run.root, ignore_errors=True)
    _current = None
    return True


def _chapter_of(run: Run) -> str:
    try:
        return run.read_config().get("chapter", "<chapter>")
    except (UserError, ValueError):
        return "<chapter>"
