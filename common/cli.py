"""The command line every chapter shares.

A chapter calls `base_parser(...)`, adds its own flags, and hands `main` to `run_main`, which turns
`UserError` into one sentence on stderr and exit code 2 (never a traceback for a user's mistake).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from common.errors import TrainingDiverged, UserError

STRATEGIES = ("auto", "one", "mirrored", "multiworker")
ROOT = Path(__file__).resolve().parents[1]
# How to start Python in the hints we print: the project's venv unless another interpreter runs us.
PYTHON = ".venv/bin/python" if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve() else "python"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults after each help text and keeps the description's line breaks."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors also exit 2, but as one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def base_parser(chapter: str, description: str, stages: Sequence[str], default_stage: str = "train",
                epochs: int | None = 10, steps_per_epoch: int | None = None, batch_size: int = 64,
                data_help: str = "the real data set; absent: the embedded default",
                batch_help: str = "global batch size (split across replicas when distributed)",
                sampling: bool = True) -> argparse.ArgumentParser:
    """The flags every chapter has; `chapter` names the default run folder `runs/<chapter>/<time>`.

    `epochs=None` leaves out --epochs and --steps-per-epoch (a chapter whose length is set otherwise);
    `sampling=False` leaves out --num and --out (a chapter without a sample stage): a flag that is offered
    is a flag that is read.
    """
    # allow_abbrev=False: a prefix such as --out must not silently mean SRGAN's --output
    parser = _Parser(prog=f"{PYTHON} chapters/{chapter}/main.py", description=description,
                     formatter_class=_Formatter, allow_abbrev=False)
    parser.set_defaults(chapter=chapter)
    parser.add_argument("--stage", choices=stages, default=default_stage,
                        help="what to do: " + ", ".join(stages))
    parser.add_argument("--data", metavar="PATH", default=None, help=data_help)
    run = parser.add_argument_group("run length and reproducibility")
    if epochs is not None:
        run.add_argument("--epochs", type=positive_int, default=epochs, help="number of epochs to train")
        run.add_argument("--steps-per-epoch", type=positive_int, default=steps_per_epoch, metavar="N",
                         help="training steps per epoch (default: one pass over the data)")
    run.add_argument("--batch-size", type=positive_int, default=batch_size, metavar="N", help=batch_help)
    run.add_argument("--seed", type=non_negative_int, default=0,
                     help="seed for weights, data order and latent noise")
    where = parser.add_argument_group("where the run lives")
    where.add_argument("--run-dir", metavar="DIR", default=None,
                       help=f"the run's folder (default for a new run: runs/{chapter}/<timestamp>; for later "
                            "stages: the latest run); an existing run's saved flags are used, flags typed now win")
    where.add_argument("--resume", nargs="?", const="latest", default=None, metavar="DIR",
                       help="continue the latest run (or the run in DIR) from its last checkpoint, "
                            "with its saved flags; flags given now (e.g. --epochs) override them")
    where.add_argument("--runs-root", metavar="DIR", default="runs", help="where new runs are created")
    where.add_argument("--checkpoints-kept", type=positive_int, default=3, metavar="N",
                       help="how many checkpoints to keep")
    if sampling:
        out = parser.add_argument_group("sampling (--stage sample)")
        out.add_argument("--num", type=positive_int, default=64, metavar="N", help="how many samples to draw")
        out.add_argument("--out", metavar="FILE", default=None,
                         help="where to write the output (default: inside the run folder, "
                              "e.g. <run>/samples/sample_seed<seed>.png)")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --out (or --output) replace a file that already exists (never an input)")
    speed = parser.add_argument_group("speed and scale")
    speed.add_argument("--precision", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                       help="compute precision (weights, optimizer state and losses stay float32): auto = bfloat16 "
                            "on a CPU with native bfloat16 (avx512_bf16/AMX) where the chapter's results hold, "
                            "float16 with loss scaling on an NVIDIA GPU with tensor cores, else float32")
    speed.add_argument("--mixed-precision", action="store_true",
                       help="the same as --precision float16 (mixed float16 on a GPU, float32 master weights, "
                            "loss scaling)")
    speed.add_argument("--xla", action="store_true", help="compile train steps with XLA (jit_compile)")
    speed.add_argument("--strategy", choices=STRATEGIES, default="auto",
                       help="tf.distribute strategy: auto = mirrored over all GPUs when there are several, "
                            "else one device; multiworker reads TF_CONFIG")
    return parser


def _number(text: str, kind: type, what: str, ok) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and value != value:  # NaN passes every comparison below
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, "a whole number of at least 1", lambda v: v >= 1)


def non_negative_int(text: str) -> int:
    return _number(text, int, "a whole number of at least 0", lambda v: v >= 0)


def int_at_least(low: int):
    """An argparse type for whole numbers >= low (e.g. scores that need two samples)."""
    def parse(text: str) -> int:
        return _number(text, int, f"a whole number of at least {low}", lambda v: v >= low)

    parse.__name__ = f"int_at_least_{low}"
    return parse


def positive_float(text: str) -> float:
    return _number(text, float, "a number above 0", lambda v: 0 < v < float("inf"))


def non_negative_float(text: str) -> float:
    return _number(text, float, "a number of at least 0", lambda v: 0 <= v < float("inf"))


def unit_interval(text: str) -> float:
    return _number(text, float, "a number from 0 to 1", lambda v: 0 <= v <= 1)


SCORING_FLAGS = ("extractor", "inception_weights", "eval_samples")  # add_scoring_flags' destinations


def add_scoring_flags(parser: argparse.ArgumentParser) -> None:
    """--extractor, --inception-weights and --eval-samples: how an image chapter's --stage evaluate scores
    (common.metrics.choose_extractor reads the first two)."""
    score = parser.add_argument_group("scoring (--stage evaluate)")
    score.add_argument("--extractor", choices=("auto", "inception", "faces_cnn"), default="auto",
                       help="features for FID/KID: faces_cnn (datasets/faces_cnn.keras, a small CNN trained on the "
                            "procedural faces, offline), inception (InceptionV3; --inception-weights FILE or the "
                            "Keras cache), auto = inception when its ImageNet weights are at hand (that file or "
                            "the Keras cache), else faces_cnn, saying so")
    score.add_argument("--inception-weights", metavar="FILE", default=None,
                       help="InceptionV3 ImageNet weights file (inception_v3_weights_tf_dim_ordering_tf_kernels.h5)")
    score.add_argument("--eval-samples", type=int_at_least(2), default=2000, metavar="N",
                       help="how many generated and real images the scores compare")


def explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations the user actually typed (so that --resume can keep the saved ones).

    argparse fills in a default only for a destination the namespace it is given lacks (documented under
    parse_args' `namespace`), so parsing again into a namespace where every destination already holds a marker
    leaves the marker exactly where nothing was typed."""
    unset = object()
    probe = argparse.Namespace(**{dest: unset for dest in vars(parser.parse_args(argv))})
    parser.parse_args(argv, namespace=probe)
    return {dest for dest, value in vars(probe).items() if value is not unset}


# every stage reads these: which run, and where runs live
_EVERY_STAGE = frozenset({"stage", "run_dir", "runs_root"})
# base_parser's --num and --out, and --overwrite: a sample stage reads them, training never does
OUTPUT_FLAGS = ("num", "out", "overwrite")
# what common.train.sample_stage reads
SAMPLE_FLAGS = ("seed", *OUTPUT_FLAGS)


def check_stage_flags(parser: argparse.ArgumentParser, argv: Sequence[str], stage_flags: Mapping[str, Iterable[str]],
                      later_only: Iterable[str] = ()) -> None:
    """A flag typed with a stage that does not read it (`--stage evaluate --epochs 50`, `--stage train --num 100`)
    would be silently ignored: it is refused in one sentence, before any work.

    `stage_flags`: the destinations each stage that works on a trained run (sample, evaluate, ...) reads. A
    stage not in it trains, and reads every flag but `later_only`, the ones only those later stages read."""
    typed, stage = explicit_flags(parser, argv), parser.parse_args(argv).stage
    unread = sorted(typed - _EVERY_STAGE - set(stage_flags[stage]) if stage in stage_flags else typed & set(later_only))
    if not unread:
        return
    if "resume" in unread:
        raise UserError(f"--stage {stage} takes its run from --run-dir DIR (default: the latest run), not --resume, "
                        "which continues training")
    stages = [name for name, reads in stage_flags.items() if set(reads) & set(unread)]
    uses = [f"--stage {_listed(stages)}"] if stages else []
    training = not set(unread) <= set().union(*stage_flags.values())  # flags none of them reads: training's
    uses += ["training; a run's own training flags are in its config.json"] if training else []
    one = len(unread) == 1
    raise UserError(f"--stage {stage} does not use {_listed([_option_of(parser, d) for d in unread])}: drop "
                    f"{'it' if one else 'them'} ({'it is' if one else 'they are'} for {' or '.join(uses)})")


def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _option_of(parser: argparse.ArgumentParser, dest: str) -> str:
    for action in parser._actions:
        if action.dest == dest and action.option_strings:
            return max(action.option_strings, key=len)
    return dest


def frozen_flags(args: argparse.Namespace) -> Any:
    """The run's flags once they are settled (parsed, a resumed run's config.json under the flags typed now, see
    common.run.open_run, and the chapter's own defaults) as a frozen dataclass whose fields are typed by their
    values: the stage code reads this one config and cannot change it (`dataclasses.replace` makes a variant)."""
    values = vars(args)
    fields = [(name, type(value) if value is not None else Any) for name, value in values.items()]
    chapter = str(values.get("chapter", "run")).title().replace("_", "")
    return dataclasses.make_dataclass(f"{chapter}Flags", fields, frozen=True)(**values)


@contextlib.contextmanager
def _native_stderr_silenced():
    """TensorFlow's C++ side prints CUDA probing noise at import even with TF_CPP_MIN_LOG_LEVEL set."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_tensorflow_quietly() -> None:
    """Imports TensorFlow and probes devices once, without the native start-up noise on stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    with _native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    # TensorFlow's and Keras' Python warnings would bury our one-sentence errors; real problems still raise.
    tf.get_logger().setLevel("ERROR")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)


class Terminated(BaseException):
    """SIGTERM (a scheduler, `kill`): unwound like Ctrl-C, so that `finally` blocks remove partial files."""


_terminations = 0


def _terminate(signum, frame) -> None:
    global _terminations
    _terminations += 1
    raise Terminated()


def check_terminated() -> None:
    """Raises Terminated again once a SIGTERM has arrived. The handler raises it wherever the main thread is,
    and library code that catches BaseException can swallow it there; long loops (an upscale's tiles) call this
    between units of work, so a stop request always ends the run."""
    if _terminations:
        raise Terminated()


def run_main(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None) -> None:
    """Runs a chapter's main; user errors become one line on stderr and exit code 2.

    A run folder this process created and left without a checkpoint or model (a bad input found late, an
    interrupt before the first checkpoint) is removed again, so it is never mistaken for a run.
    """
    from common import run as runs

    argv = sys.argv[1:] if argv is None else list(argv)
    if not {"-h", "--help"} & set(argv):
        load_tensorflow_quietly()
    global _terminations
    _terminations, previous = 0, None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = main(argv) or 0
    except UserError as error:
        runs.discard_if_empty()
        print(f"error: {error}", file=sys.stderr)
        code = 2
    except TrainingDiverged as error:
        print(f"training stopped: {error}", file=sys.stderr)
        code = 3
    except KeyboardInterrupt:
        print(runs.interrupted("Ctrl-C"), file=sys.stderr)
        code = 130
    except Terminated:
        print(runs.interrupted("SIGTERM"), file=sys.stderr)
        code = 143
    finally:
        runs._current = None
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(code)
