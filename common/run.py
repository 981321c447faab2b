"""A run's folder: config.json, logs/, checkpoints/, samples/, models/, metrics.json.

Everything a run writes lives under one directory so that TensorBoard, `--resume` and the later stages
(`sample`, `evaluate`, ...) find it without extra flags.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from common.cli import explicit_flags
from common.errors import UserError

# Flags that describe how to run, not what is trained: a resumed run may change them freely.
_NOT_SAVED = {"resume", "run_dir", "stage", "num", "out"}


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

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def read_config(self) -> dict[str, Any]:
        if not self.config_file.exists():
            raise UserError(f"{self.root} is not a run directory (no config.json in it)")
        return json.loads(self.config_file.read_text())

    def __str__(self) -> str:
        return str(self.root)


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


def latest_run(runs_root: str | os.PathLike, chapter: str, need: str | None = None) -> Run | None:
    """The newest run of a chapter (optionally one that has file `need` inside it)."""
    base = Path(runs_root) / chapter
    if not base.is_dir():
        return None
    runs = [Run(p) for p in base.iterdir() if (p / "config.json").exists() and (need is None or (p / need).exists())]
    return max(runs, key=lambda r: r.config_file.stat().st_mtime, default=None)


def open_run(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str],
             training: bool) -> Run:
    """Resolves the run directory for this invocation and, for training, records the flags.

    A new training run gets a fresh folder; `--resume` reopens one and restores its saved flags (flags typed
    now win); other stages use `--run-dir` or the chapter's latest run.
    """
    if args.resume is not None:
        if args.run_dir and args.resume != "latest":
            raise UserError("give the run to resume either as --resume DIR or as --run-dir DIR, not both")
        run = _find_run(args, args.run_dir or (None if args.resume == "latest" else args.resume),
                        need="checkpoints/checkpoint")
        typed = explicit_flags(parser, argv)
        for key, value in run.read_config().items():
            if key not in typed and key not in _NOT_SAVED and hasattr(args, key):
                setattr(args, key, value)
    elif training:
        if args.run_dir:
            run = Run(args.run_dir)
            if run.has_checkpoint():
                raise UserError(f"{run} already holds a trained run; continue it with --resume {run} "
                                "or choose another --run-dir")
        else:
            run = Run(Path(args.runs_root) / args.chapter / time.strftime("%Y%m%d-%H%M%S"))
            while run.root.exists():  # two runs started in the same second
                run = Run(f"{run.root}-1")
    else:
        return _find_run(args, args.run_dir)
    run.create()
    if training:
        config = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_SAVED}
        run.write_json(run.config_file, config)
    args.run_dir = str(run.root)
    return run


def _find_run(args: argparse.Namespace, path: str | None, need: str | None = None) -> Run:
    if path:
        run = Run(path)
        if not run.root.is_dir():
            raise UserError(f"run directory {run} does not exist")
        run.read_config()
        if need and not (run.root / need).exists():
            raise UserError(f"{run} has no checkpoint to resume from; start it with "
                            f"python chapters/{args.chapter}/main.py --run-dir {run}")
        return run
    run = latest_run(args.runs_root, args.chapter, need)
    if run is None:
        raise UserError(f"no run of {args.chapter} under {args.runs_root}/{args.chapter}; "
                        f"train one first with python chapters/{args.chapter}/main.py, or pass --run-dir")
    return run
