"""The training command line: ``python -m rlhp_core.train`` and the ``rlhp-train`` script.

One flag per TrainConfig field (``--reward-lr`` sets ``reward_lr``), documented by the docstring
under the field in config.py, plus ``--config FILE`` and the human labeling page's ``--host``,
``--port``, ``--token`` and ``--goal``. Rerunning a command on the same ``--run-dir`` resumes the run.

Bad input is refused before anything is written (no run directory, no label store): exit
status 2 and one line that names the flag, the value and what is allowed. Everything that can
be checked without making an environment is checked first: the config's values
(:func:`rlhp_core.config.resolve`), the env id, the device, the labeler spec, the seed label
store, the labeling page's address and the run directory.

Exit status: 0 done, 2 bad input, 130 interrupted (a checkpoint is written; rerun to resume).

``--tracking-uri URI [--experiment NAME]`` also tracks the run in MLflow
(:func:`bench.tracking.track_training`). That is the one place the core reaches into ``bench``,
imported only when the flag is given: the sweep's and a single run's MLflow layer stay one
(``bench.tracking.Tracker``), and ``import rlhp_core...`` never loads MLflow or ``bench``.

:class:`ArgumentParser` (one-line errors) is shared with ``bench.sweep`` and ``bench.report``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import os
import re
import shlex
import socket
import sys
from pathlib import Path

from .config import CHOICES, FIELD_KINDS, ConfigError, TrainConfig, parse_field, resolve
from .paths import check_writable_dir

PROG = "python -m rlhp_core.train"
PAGE_FLAGS = ("host", "port", "token", "goal")
"""Labeling-page flags: kept in TrainConfig.extra (they may change when a run is resumed)."""
TRACKING_FLAGS = ("tracking_uri", "experiment")
"""MLflow flags: not TrainConfig fields (where a run is tracked is not part of what it is)."""


class UsageError(Exception):
    """Bad command-line input found after parsing: printed as one line, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``PROG: error: MESSAGE (see --help)``, with exit status 2.

    argparse prints the whole usage first, which for a command with dozens of flags is a screen
    that buries the one line that matters.
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _BoolFlag(argparse.Action):
    """``--NAME`` / ``--no-NAME`` for a boolean field; ``--NAME VALUE`` (true/false, yes/no, on/off,
    1/0, and none for an optional field) too, so command lines written that way keep working."""

    def __init__(self, option_strings, dest, **kwargs):
        flag = option_strings[0]
        super().__init__([flag, "--no-" + flag[2:]], dest, nargs="?", metavar="BOOL", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string.startswith("--no-"):
            if values is not None:
                parser.error(f"argument {option_string}: takes no value, got {values!r}")
            value = False
        elif values is None:
            value = True
        else:
            try:
                value = parse_field(self.dest, values)
            except ValueError as exc:
                parser.error(f"argument {option_string}: {exc}")
        setattr(namespace, self.dest, value)



class _HelpFormatter(argparse.HelpFormatter):
    """Shows a boolean flag as ``--NAME [BOOL], --no-NAME`` (the negative form takes no value)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, _BoolFlag):
            return f"{action.option_strings[0]} [BOOL], {action.option_strings[1]}"
        return super()._format_action_invocation(action)


def _field_type(name: str):
    """argparse ``type`` for a field: :func:`parse_field`, its error shown as argparse's."""

    def convert(text: str):
        try:
            return parse_field(name, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port in 0-65535 (0: any free port), got {text!r}")
    return port


def _field_docs() -> dict[str, str]:
    """The docstring under each TrainConfig field, for --help (one source of truth)."""
    body = ast.parse(inspect.getsource(TrainConfig)).body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def flag_of(name: str) -> str:
    """The command-line flag of a TrainConfig field."""
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG, formatter_class=_HelpFormatter,
        description="Learn a reward from preferences and train a policy on it (Christiano et al. 2017). "
                    "Rerunning the same command on the same --run-dir resumes it. Exit status: 0 done, "
                    "2 bad input (nothing written), 130 interrupted (rerun to resume).",
    )
    p.add_argument("--config", metavar="FILE",
                   help="JSON file with TrainConfig fields; flags given on the command line override it")
    docs = _field_docs()
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        base, optional = FIELD_KINDS[f.name]
        default = getattr(defaults, f.name)
        shown = "none" if default is None else str(default).lower() if base is bool else default
        text = docs.get(f.name, "") + f" (default: {shown})"
        kw: dict = {"default": argparse.SUPPRESS, "help": text.replace("%", "%%")}
        if base is bool:
            p.add_argument(flag_of(f.name), action=_BoolFlag, **kw)
            continue
        if f.name in CHOICES:
            kw["choices"] = CHOICES[f.name]
        else:
            kw["type"] = _field_type(f.name)
            kw["metavar"] = ("PATH" if f.name in ("run_dir", "seed_labels") else
                             {int: "N", float: "X", str: "TEXT"}[base]) + ("|none" if optional else "")
        p.add_argument(flag_of(f.name), **kw)
    g = p.add_argument_group("human labeling page (--labeler human or PRESET+human)")
    g.add_argument("--host", default=argparse.SUPPRESS,
                   help="address to serve the page on (default: 127.0.0.1; any other address requires a token)")
    g.add_argument("--port", type=_port, default=argparse.SUPPRESS, metavar="PORT",
                   help="TCP port of the page, 0-65535 (default: 0, any free port)")
    g.add_argument("--token", default=argparse.SUPPRESS,
                   help="access token, 4-256 characters of [A-Za-z0-9._~-] (default: $RLHP_LABEL_TOKEN if set, which "
                        "keeps it out of shell history and ps; none on loopback, generated otherwise); never "
                        "saved in config.json")
    g.add_argument("--goal", default=argparse.SUPPRESS, metavar="TEXT",
                   help="what people are told to look for, shown above the clips instead of the env's usual line "
                        "(e.g. Enduro: \"Keep alongside other cars; don't pass them\"): teach a behaviour no reward "
                        "describes. Kept in config.json (extra.goal); needs a person labeling")
    g = p.add_argument_group("experiment tracking (MLflow)")
    g.add_argument("--tracking-uri", default=argparse.SUPPRESS, metavar="URI",
                   help="also track the run in MLflow: params, metrics (step = env steps), the reward model, the "
                        "policy, config and metrics.csv as artifacts; e.g. sqlite:///mlflow.db (artifacts go to "
                        "mlartifacts/ next to it) or http://HOST:5000 (an mlflow server). Default: not tracked")
    g.add_argument("--experiment", default=argparse.SUPPRESS, metavar="NAME",
                   help="MLflow experiment of the run (default: rlhp-train); needs --tracking-uri")
    return p


# -- from arguments to a config ----------------------------------------------------------------------
def _read_config_file(path: str) -> tuple[TrainConfig, set[str]]:
    """The --config file's config, and the fields it sets."""
    where = f"--config {path!r}"
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{where}: {'not a file' if p.exists() else 'no such file'}; expected a JSON file of "
                         f"TrainConfig fields (a run's config.json will do)")
    try:
        text = p.read_text()
        return TrainConfig.from_json(text), set(json.loads(text))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise UsageError(f"{where}: {exc}") from None


def _config_and_sources(args: dict) -> tuple[TrainConfig, dict[str, str]]:
    """(config, {field: the flag or file that set it}) from parsed arguments (unresolved, unchecked)."""
    path = args.pop("config", None)
    base, sources = TrainConfig(), {}
    if path is not None:
        base, fields = _read_config_file(path)
        sources = dict.fromkeys(fields, f"--config {path!r}")
    extra = dict(base.extra)
    token = extra.pop("token", None)  # an older config.json or --config file: use it, never keep it
    for key in PAGE_FLAGS:
        if key in args:
            extra[key] = args.pop(key)
    token = extra.pop("token", token)
    if token is not None:
        from oracles.human import TOKEN_ENV, check_token

        # read by the human labeler; kept out of TrainConfig, so config.json never holds the secret
        try:
            os.environ[TOKEN_ENV] = check_token(token, "--token")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    sources.update({name: flag_of(name) for name in args})
    return dataclasses.replace(base, **args, extra=extra), sources


# -- checks before anything is written -----------------------------------------------------------------
def _where(fields: tuple[str, ...], sources: dict[str, str]) -> str:
    """The flags of ``fields`` (and the config file, for fields it set): who to blame for a ConfigError."""
    files = sorted({sources[f] for f in fields if sources.get(f, "").startswith("--config")})
    return "/".join(map(flag_of, fields)) + (f" (set in {', '.join(files)})" if files else "")


def check(cfg: TrainConfig, sources: dict[str, str] | None = None) -> None:
    """Check all that can be checked of ``cfg`` without writing anything or making an env; raises
    UsageError. ``sources`` maps fields to the flag or file that set them, for the message."""
    try:
        c = resolve(cfg)
        check_environment(c)
    except ConfigError as exc:
        raise UsageError(f"{_where(exc.fields, sources or {})}: {exc}") from None
    _check_page(c.extra, human=c.reward == "preferences" and (c.labeler == "human" or c.labeler.endswith("+human")))
    try:
        check_writable_dir(c.run_dir)
    except ValueError as exc:
        raise UsageError(f"--run-dir {c.run_dir!r}: {exc}") from None


def check_environment(c: TrainConfig, *, labeler: bool = True) -> None:
    """What :func:`resolve` leaves out, on a resolved config; raises ConfigError naming the field.

    The env id (registered, and of a form the project runs) and the segment length against its
    episodes, the device on this machine, the labeler spec (with ``labeler``) and the seed label
    store. Nothing is written and no env is made. ``bench.sweep`` checks its trials with it too.
    """
    from .envs import atari_game, episode_step_limit

    try:
        atari_game(c.env_id)  # an unknown id, or an Atari form the project does not use
    except ValueError as exc:
        raise ConfigError("env_id", str(exc)) from None
    limit = episode_step_limit(c.env_id, c.max_episode_steps, c.frameskip)
    if c.reward == "preferences" and limit is not None and c.segment_length > limit:
        raise ConfigError(("segment_length", "max_episode_steps"),
                          f"segment_length {c.segment_length} is longer than an episode of {c.env_id} ({limit} "
                          f"agent steps); allowed: segment_length <= {limit} (or raise max_episode_steps)")
    _check_device(c.device)
    if labeler and c.reward == "preferences":
        _check_labeler(c)
    if c.seed_labels is not None:
        _check_seed_labels(c.seed_labels, c.env_id)


def _check_device(device: str) -> None:
    """resolve() checked the form ('cuda:N'); here whether this machine has that device."""
    if not device.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= count:
        have = f"CUDA devices 0-{count - 1}" if count else "no CUDA device"
        raise ConfigError("device", f"device {device!r}: this machine has {have}; allowed: 'auto', 'cpu'"
                                    + (f", 'cuda', 'cuda:N' with N < {count}" if count else ""))


def _check_labeler(c: TrainConfig) -> None:
    """Build the scripted teacher once (cheap, writes nothing): an unknown preset or knob is refused here."""
    try:
        from oracles.configured import ConfiguredLabeler

        ConfiguredLabeler(c.labeler).check(c)
    except ImportError as exc:
        raise ConfigError("labeler", f"labeler {c.labeler!r} needs the oracles package, which is not "
                                     f"importable here ({exc})") from None
    except ValueError as exc:
        raise ConfigError("labeler", f"labeler {c.labeler!r}: {exc}") from None


def _check_seed_labels(path: str, env_id: str) -> None:
    from .label_store import LabelStoreError, read_meta

    try:
        meta = read_meta(path)
    except LabelStoreError as exc:
        raise ConfigError("seed_labels", f"seed_labels {path!r}: {exc}") from None
    if meta["env_id"] != env_id:
        raise ConfigError("seed_labels", f"seed_labels {path!r} holds labels for env {meta['env_id']!r}, this run "
                                         f"is {env_id!r}; allowed: a label store of the same env")


def _check_page(extra: dict, *, human: bool) -> None:
    """The labeling page's address, token and, when a person labels, that its port can be bound."""
    host = extra.get("host", "127.0.0.1")
    port = extra.get("port", 0)
    if not isinstance(host, str) or not host.strip("[] "):
        raise UsageError(f"--host {host!r}: expected an IP address or host name, e.g. 127.0.0.1 or 0.0.0.0")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UsageError(f"--port {port!r}: expected a TCP port in 0-65535 (0: any free port)")
    address = host.strip("[]")
    try:
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"--host {host!r}: not an IP address or a host name this machine resolves ({exc})") from None
    if "goal" in extra:
        from oracles.human import check_goal

        if not human:
            raise UsageError(f"--goal {extra['goal']!r}: only people see the goal (on the labeling page of "
                             f"--labeler human or PRESET+human); a scripted labeler answers by the env's reward")
        try:
            extra["goal"] = check_goal(extra["goal"], "--goal")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if not human:
        return
    with socket.socket(family, socket.SOCK_STREAM) as s:  # as the page's server will: reuse, then bind
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            raise UsageError(f"--host {host!r} --port {port}: cannot serve the labeling page there "
                             f"({exc.strerror or exc})") from None


def _check_tracking(options: dict) -> None:
    """--tracking-uri (its syntax; an mlflow server must answer) and --experiment; raises UsageError."""
    uri, experiment = options.get("tracking_uri"), options.get("experiment")
    if uri is None:
        if experiment is not None:
            raise UsageError(f"--experiment {experiment!r}: names the MLflow experiment of --tracking-uri, "
                             f"which is not given; e.g. --tracking-uri sqlite:///mlflow.db")
        return
    if experiment is not None and not experiment.strip():
        raise UsageError("--experiment '': expected a name, or leave the flag out for 'rlhp-train'")
    try:
        from bench.storage import TrackingError, check_tracking_uri
    except ImportError as exc:
        raise UsageError(f"--tracking-uri needs the bench package, which is not importable here ({exc})") from None
    try:
        check_tracking_uri(uri)
    except TrackingError as exc:
        raise UsageError(f"--tracking-uri: {exc}") from None


def _command_line(argv: list[str]) -> str:
    """This command as typed, for the MLflow run: a --token's value (and a URL's password) masked."""
    out, hide = [], False
    for arg in argv:
        if hide:
            arg, hide = "***", False
        elif arg == "--token":
            hide = True
        elif arg.startswith("--token="):
            arg = "--token=***"
        out.append(arg)
    return re.sub(r"(://[^:/@\s]+:)[^@\s]*@", r"\1***@", f"{PROG} {shlex.join(out)}".strip())


# -- entry points ----------------------------------------------------------------------------------------
def _parse(argv: list[str] | None) -> tuple[TrainConfig, dict]:
    """Parse and check the command line: (config, tracking options: {tracking_uri, experiment, command}
    or {}). SystemExit (2 after one line on stderr; 0 after --help)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = vars(build_parser().parse_args(argv))
    tracking = {k: args.pop(k) for k in TRACKING_FLAGS if k in args}
    try:
        cfg, sources = _config_and_sources(args)
        check(cfg, sources)
        _check_tracking(tracking)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if tracking:
        tracking["command"] = _command_line(argv)
    return cfg, tracking


def _checked_config(argv: list[str] | None) -> TrainConfig:
    """Parse and check the command line; SystemExit (2 after one line on stderr; 0 after --help)."""
    return _parse(argv)[0]


def labeler_for(cfg: TrainConfig):
    """The labeler ``cfg.labeler`` names (oracles.configured.ConfiguredLabeler), for a preference
    run; None for the true-reward baseline. Here, the composition root, the core (which knows
    nothing of who answers) meets the oracles."""
    if cfg.reward != "preferences":
        return None
    from oracles.configured import ConfiguredLabeler

    return ConfiguredLabeler(cfg.labeler)


def train(cfg: TrainConfig, **kwargs) -> dict:
    """Train (or resume) ``cfg`` with the labeler it names (rlhp_core.train.run_training with
    :func:`labeler_for`); ``kwargs``: run_training's ``on_metrics`` and ``should_stop``."""
    from .train import run_training

    return run_training(cfg, labeler=labeler_for(cfg), **kwargs)


def _train(cfg: TrainConfig, tracking: dict | None = None) -> int:
    import torch

    torch.set_num_threads(int(os.environ.get("RLHP_TORCH_THREADS", "1")))
    try:
        if tracking and tracking.get("tracking_uri"):
            from bench.tracking import track_training  # only now: see the module docstring

            summary = track_training(train, cfg, tracking_uri=tracking["tracking_uri"],
                                     experiment=tracking.get("experiment"), command=tracking.get("command"))
            print(f"MLflow: run {summary.get('mlflow_run_id')} in experiment {summary.get('mlflow_experiment')!r} "
                  f"({summary.get('mlflow_page')})", file=sys.stderr)
        else:
            summary = train(cfg)
    except (ValueError, FileNotFoundError) as exc:  # found by the learner: e.g. a run dir of another config
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: checkpoint written; rerun the same command to resume", file=sys.stderr)
        return 130
    print(json.dumps({k: v for k, v in summary.items() if k not in ("env_info", "mlflow_page")}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Check the command line, then train (or resume). Returns the exit status."""
    try:
        cfg, tracking = _parse(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return _train(cfg, tracking)


def cli() -> int:
    """The ``rlhp-train`` script and ``python -m rlhp_core.train``: :func:`main` under tcmalloc
    (rlhp_core/allocator.py). Bad input is refused before the restart the allocator needs."""
    from .allocator import reexec_with_tcmalloc

    try:
        cfg, tracking = _parse(None)
    except SystemExit as exc:
        return int(exc.code or 0)
    reexec_with_tcmalloc()  # returns in the restarted process, which checked its command line again
    return _train(cfg, tracking)
