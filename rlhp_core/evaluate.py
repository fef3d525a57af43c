"""Evaluate a trained run: play its policy for N episodes and report the true return.

::

    python -m rlhp_core.evaluate RUN_DIR [--episodes N] [--deterministic | --stochastic] [--seed S]
                                 [--num-envs K] [--max-steps M] [--video out.gif|out.mp4] [--json PATH]
    python -m rlhp_core.evaluate --mlflow-run RUN_ID --tracking-uri URI ...

What rl-zoo's ``enjoy`` and SB3's ``evaluate_policy`` do, for this project's runs: the newest
verified checkpoint's policy plays in the env rebuilt from the run's config (sticky actions,
frameskip, episode limit, Atari preprocessing and score blanking: :mod:`rlhp_core.trained`), on
env seeds distinct from training's, and the command prints mean, std (population, as SB3), min
and max of the true (unclipped) return and of the episode length, and where the env has them the
progress counters of :mod:`rlhp_core.episode_stats`: reward gained and lost per episode (Enduro:
cars passed, times passed back) and ``progress`` (Enduro: odometer distance). A JSON summary with
every episode goes to ``RUN_DIR/evaluations/`` (or ``--json``).

Episodes: K envs play at once (env i seeded with S + i); env i contributes the first
``(N + i) // K`` episodes it finishes, SB3's rule, so short episodes are not over-counted. The
result is a function of the checkpoint, N, K, S and the mode: the same command gives the same
numbers. Deterministic play takes the policy's mode (argmax / Gaussian mean); ``--stochastic``
samples, from a generator seeded with S.

``--video`` records env 0's first episode (at most ``--video-frames`` frames): GIF through Pillow,
MP4 through ffmpeg (the ``imageio-ffmpeg`` package's, or one on PATH). Atari records the RGB
screen; classic-control envs render with pygame (``gymnasium[classic-control]``), MuJoCo headless.

``--mlflow-run``: a trial run of ``bench.sweep`` records its run directory (tag ``rlhp.run_dir``,
param ``run_dir``, an absolute path); the policy's checkpoints are not logged to MLflow, so that
directory must be on this machine.

Exit status: 0 done, 2 bad input (one line naming the value), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .cli import ArgumentParser
from .config import parse_int
from .envs import episode_step_limit
from .episode_stats import EpisodeStats
from .paths import check_writable_dir, write_atomic
from .trained import load_policy, make_vec_env_for, read_config, real_time_fps

PROG = "python -m rlhp_core.evaluate"
EVAL_SEED_OFFSET = 1_000_003
"""Default evaluation seed = the run's seed + this. Training seeds env i with seed + 7919 * resumes + i,
so for any run with fewer than 126 resumes and 2,000 envs the two never meet."""
MAX_SEED = 2**31 - 1
"""ALE seeds are 32-bit signed; env i gets seed + i."""
VIDEO_FORMATS = (".gif", ".mp4")
DEFAULT_VIDEO_FRAMES = 2_000
"""Frames recorded at most: an Atari episode can last 27,000 steps, and a GIF holds every frame in memory."""


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit status 2."""


# -- video ---------------------------------------------------------------------------------------------------------
def ffmpeg_executable() -> str | None:
    """The ffmpeg to write MP4 with: imageio-ffmpeg's bundled binary, else one on PATH, else None."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


def check_video_path(path: str | Path) -> Path:
    """The video path, refused (UsageError) before any episode is played if it cannot be written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise UsageError(f"--video {str(path)!r}: unknown format {suffix or '(no extension)'!r}; "
                         f"allowed: {', '.join(VIDEO_FORMATS)}")
    if suffix == ".mp4" and ffmpeg_executable() is None:
        raise UsageError(f"--video {str(path)!r}: writing MP4 needs ffmpeg (pip install imageio-ffmpeg, or an ffmpeg "
                         f"on PATH), and there is none here; write a GIF instead: --video {path.with_suffix('.gif')}")
    if path.is_dir():
        raise UsageError(f"--video {str(path)!r} is a folder; expected a file name ending in .gif or .mp4")
    try:
        check_writable_dir(path.parent)
    except ValueError as exc:
        raise UsageError(f"--video {str(path)!r}: {exc}") from None
    return path


class VideoWriter:
    """Frames in, a GIF or MP4 out. MP4 frames stream to ffmpeg as they come; GIF frames are kept
    palette-quantised (1 byte per pixel, a third of the RGB) until :meth:`close` writes the file."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self.count = Path(path), float(fps), 0
        self._gif: list = []
        self._ffmpeg: subprocess.Popen | None = None

    def add(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if self.path.suffix.lower() == ".gif":
            from PIL import Image

            self._gif.append(Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE))
        else:
            if self._ffmpeg is None:
                h, w = frame.shape[:2]
                self._ffmpeg = subprocess.Popen(
                    [ffmpeg_executable(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                     "-s", f"{w}x{h}", "-r", f"{self.fps:g}", "-i", "-",
                     "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-pix_fmt", "yuv420p", str(self.path)],
                    stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            self._ffmpeg.stdin.write(frame.tobytes())
        self.count += 1

    def close(self) -> None:
        if self._gif:
            ms = max(20, round(1000 / self.fps / 10) * 10)  # GIF delays are in 1/100 s; browsers floor 10 ms to 100
            self._gif[0].save(self.path, save_all=True, append_images=self._gif[1:], duration=ms, loop=0)
            self._gif = []
        if self._ffmpeg is not None:
            _, err = self._ffmpeg.communicate()
            if self._ffmpeg.returncode != 0:
                raise RuntimeError(f"ffmpeg could not write {self.path}: {err.decode(errors='replace').strip()}")
            self._ffmpeg = None

    def abort(self) -> None:
        """Stop an unfinished video (an error or Ctrl-C mid-evaluation): no ffmpeg left running."""
        self._gif = []
        if self._ffmpeg is not None:
            self._ffmpeg.kill()
            self._ffmpeg.communicate()
            self._ffmpeg = None


# -- evaluation ----------------------------------------------------------------------------------------------------
def _spread(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def default_seed(training_seed: int, num_envs: int = 1) -> int:
    """The evaluation seed when none is given: distinct from the training envs' (see EVAL_SEED_OFFSET)."""
    return (training_seed + EVAL_SEED_OFFSET) % (MAX_SEED - num_envs)


def evaluate(run_dir: str | Path, *, episodes: int = 10, deterministic: bool = True, seed: int | None = None,
             num_envs: int | None = None, max_steps: int | None = None, video: str | Path | None = None,
             video_frames: int = DEFAULT_VIDEO_FRAMES, fps: float | None = None, device: str = "cpu",
             log=None) -> dict:
    """Play the run's newest verified policy for ``episodes`` episodes; returns the summary (see module doc).

    ``max_steps`` cuts every episode at that many agent steps (counted as truncated), below the
    run's own limit. ``log`` (a callable taking a line) hears of each episode as it ends.
    Raises RunError/UsageError (ValueErrors) for input that cannot be evaluated, before playing.
    """
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    if episodes < 1:
        raise UsageError(f"--episodes {episodes}: expected an integer >= 1")
    num_envs = min(episodes, 8) if num_envs is None else num_envs
    if num_envs < 1:
        raise UsageError(f"--num-envs {num_envs}: expected an integer >= 1")
    if max_steps is not None and max_steps < 1:
        raise UsageError(f"--max-steps {max_steps}: expected an integer >= 1 (agent steps per episode)")
    if video_frames < 1:
        raise UsageError(f"--video-frames {video_frames}: expected an integer >= 1")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise UsageError(f"--fps {fps}: expected a number > 0")
    seed = default_seed(cfg.seed, num_envs) if seed is None else seed
    if not 0 <= seed <= MAX_SEED - num_envs:
        raise UsageError(f"--seed {seed}: expected 0 <= seed <= {MAX_SEED - num_envs} (env i is seeded with seed + i, "
                         f"and ALE takes 32-bit seeds)")
    limit = episode_step_limit(cfg.env_id, cfg.max_episode_steps, cfg.frameskip)
    if max_steps is not None and (limit is None or max_steps < limit):
        limit = max_steps
    if limit is None:
        raise UsageError(f"{cfg.env_id} has no episode step limit, so an episode may never end; pass --max-steps")
    video = check_video_path(video) if video is not None else None

    with warnings.catch_warnings():  # a video without frames is refused below, with the reason
        warnings.filterwarnings("ignore", message=".*cannot render frames")
        env = make_vec_env_for(cfg, num_envs, keep_frames=video is not None, max_episode_steps=limit)
    writer = None
    try:
        if video is not None and not env.keep_frames:
            raise UsageError(f"--video {str(video)!r}: {cfg.env_id} cannot render frames here "
                             f"({env.info.get('frames')}); leave out --video to evaluate without one")
        policy = load_policy(run_dir, env=env, device=device, seed=seed)
        if video is not None:
            writer = VideoWriter(video, fps or real_time_fps(env))
        t0 = time.time()
        quota = [(episodes + i) // num_envs for i in range(num_envs)]
        taken = [0] * num_envs
        stats = EpisodeStats(num_envs)
        records: list[dict] = []
        obs, frames = env.reset(seed=seed)
        recording = writer is not None
        if recording:
            writer.add(frames[0])
        while len(records) < episodes:
            out = env.step(policy.predict(obs, deterministic))
            stats.step(out.reward, out.done, out.progress)
            if recording:
                if out.done[0] or writer.count >= video_frames:
                    recording = False  # the frame after an end is the next episode's first
                else:
                    writer.add(out.frames[0])
            for ep in stats.pop_episodes():
                i = ep["env"]
                if taken[i] < quota[i]:
                    taken[i] += 1
                    ep["truncated"] = bool(out.truncated[i] and not out.terminated[i])
                    records.append(ep)
                    if log is not None:
                        log(f"episode {len(records)}/{episodes} (env {i}): return {ep['return']:g}, "
                            f"length {ep['length']}" + (" (cut by the step limit)" if ep["truncated"] else ""))
            obs = out.obs
        wall = time.time() - t0
        video_info = None
        if writer is not None:
            writer.close()
            video_info = {"path": str(video), "frames": writer.count, "fps": writer.fps}
            writer = None
        summary = {
            "run_dir": str(run_dir.resolve()), "env_id": cfg.env_id, "algo": cfg.algo, "reward": cfg.reward,
            "checkpoint_step": policy.step, "episodes": episodes, "deterministic": deterministic, "seed": seed,
            "training_seed": cfg.seed, "num_envs": num_envs, "max_episode_steps": limit, "device": str(device),
            "return": _spread([e["return"] for e in records]),
            "length": _spread([e["length"] for e in records]),
            "gained": _spread([e["gained"] for e in records]),
            "lost": _spread([e["lost"] for e in records]),
            "truncated": sum(e["truncated"] for e in records),
            "progress_name": env.progress_name,
            "video": video_info,
            "wall_time_s": wall,
            "per_episode": records,
            "env_info": env.info,
        }
        if env.progress_name is not None:
            summary["progress"] = _spread([e["progress"] for e in records])
        return summary
    finally:
        if writer is not None:
            writer.abort()
        env.close()


def describe(summary: dict) -> str:
    """The summary as the lines the command prints."""
    s = summary
    mode = "deterministic" if s["deterministic"] else "stochastic"
    head = (f"{s['env_id']}: {s['algo']} on {s['reward']} reward, checkpoint at step {s['checkpoint_step']:,}; "
            f"{s['episodes']} episodes, {mode}, seed {s['seed']} ({s['num_envs']} envs)")
    lines = [head]

    def row(name: str, d: dict) -> str:
        return f"  {name:<9} mean {d['mean']:10.2f}  std {d['std']:9.2f}  min {d['min']:10.2f}  max {d['max']:10.2f}"

    lines.append(row("return", s["return"]))
    lines.append(row("length", s["length"]))
    if s["gained"]["max"] > 0 and s["lost"]["max"] > 0:  # with rewards of one sign they only repeat the return
        lines.append(row("gained", s["gained"]))
        lines.append(row("lost", s["lost"]))
    if "progress" in s:
        lines.append(row(s["progress_name"] or "progress", s["progress"]))
    if s["truncated"]:
        lines.append(f"  {s['truncated']} of {s['episodes']} episodes cut at {s['max_episode_steps']:,} steps")
    if s["video"]:
        lines.append(f"  video: {s['video']['path']} ({s['video']['frames']} frames)")
    return "\n".join(lines)


# -- MLflow --------------------------------------------------------------------------------------------------------
def run_dir_of_mlflow_run(run_id: str, tracking_uri: str | None = None, *, client=None) -> Path:
    """The run directory a ``bench.sweep`` trial run recorded (tag ``rlhp.run_dir``, else param ``run_dir``).

    ``client``: an ``MlflowClient`` already at hand (else one for ``tracking_uri``). A local
    tracking store that does not exist is refused before MLflow is asked: MLflow would create an
    empty one. The URI is not repeated in messages (it may hold a password).
    """
    if client is None:
        for prefix in ("sqlite:///", "file://"):
            if tracking_uri.startswith(prefix) and not Path(tracking_uri[len(prefix):]).exists():
                raise UsageError(f"--tracking-uri: {tracking_uri[len(prefix):]!r} does not exist")
        if "://" not in tracking_uri and not Path(tracking_uri).exists():
            raise UsageError(f"--tracking-uri {tracking_uri!r}: no such folder (an MLflow file store), and not a URI")
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        first = (str(getattr(exc, "message", exc)).splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"--mlflow-run {run_id!r}: cannot be read from the given --tracking-uri ({first})") from None
    recorded = run.data.tags.get("rlhp.run_dir") or run.data.params.get("run_dir")
    if not recorded:
        raise UsageError(f"--mlflow-run {run_id!r} records no run directory (no 'rlhp.run_dir' tag, no 'run_dir' "
                         f"param): only the trial runs of bench.sweep do, not a study's parent run")
    if not (Path(recorded) / "config.json").is_file():
        raise UsageError(f"--mlflow-run {run_id!r}: its run directory {recorded!r} is not on this machine (or holds "
                         f"no config.json); MLflow keeps only config.json, metrics and reward_model.pt, not the "
                         f"policy's checkpoints, so evaluate where it trained or copy the folder here and pass it")
    return Path(recorded)


# -- command line --------------------------------------------------------------------------------------------------
def _int_at_least(low: int):
    def convert(text: str) -> int:
        try:
            value = parse_int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    return convert


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Play a trained run's policy (its newest verified checkpoint) for N "
                       "episodes in the env rebuilt from its config, and report the true return. Exit status: 0 done, "
                       "2 bad input, 130 interrupted.")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="the run directory (--run-dir of the training)")
    p.add_argument("--episodes", type=_int_at_least(1), default=10, metavar="N", help="episodes to play (default: 10)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=True,
                      help="take the policy's most likely action (default)")
    mode.add_argument("--stochastic", dest="deterministic", action="store_false",
                      help="sample actions from the policy, as in training")
    p.add_argument("--seed", type=_int_at_least(0), metavar="S",
                   help=f"env i is seeded with S + i (default: the run's seed + {EVAL_SEED_OFFSET:,}, never a training seed)")
    p.add_argument("--num-envs", type=_int_at_least(1), metavar="K", help="envs played at once (default: min(N, 8))")
    p.add_argument("--max-steps", type=_int_at_least(1), metavar="M",
                   help="cut each episode after M agent steps (default: the run's episode limit)")
    p.add_argument("--video", metavar="PATH", help="record env 0's first episode as a .gif (Pillow) or .mp4 (ffmpeg)")
    p.add_argument("--video-frames", type=_int_at_least(1), default=DEFAULT_VIDEO_FRAMES, metavar="N",
                   help=f"most frames recorded (default: {DEFAULT_VIDEO_FRAMES:,})")
    p.add_argument("--fps", type=_positive_float, metavar="F",
                   help="video frame rate (default: 60 / frameskip on Atari, i.e. real time; 30 otherwise)")
    p.add_argument("--json", metavar="PATH",
                   help="where the JSON summary goes (default: RUN_DIR/evaluations/step-N-seed-S-MODE.json)")
    p.add_argument("--device", default="cpu", help="torch device of the policy (default: cpu)")
    g = p.add_argument_group("a run tracked by bench.sweep in MLflow, instead of RUN_DIR")
    g.add_argument("--mlflow-run", metavar="RUN_ID", help="the trial's MLflow run id")
    g.add_argument("--tracking-uri", metavar="URI", help="the MLflow tracking URI (e.g. sqlite:///sweeps/S/mlflow.db)")
    return p


def _run_dir_from_args(args: argparse.Namespace) -> Path:
    if args.mlflow_run is not None:
        if args.run_dir is not None:
            raise UsageError(f"give RUN_DIR {args.run_dir!r} or --mlflow-run {args.mlflow_run!r}, not both")
        if args.tracking_uri is None:
            raise UsageError(f"--mlflow-run {args.mlflow_run!r} needs --tracking-uri")
        return run_dir_of_mlflow_run(args.mlflow_run, args.tracking_uri)
    if args.tracking_uri is not None:
        raise UsageError("--tracking-uri is for --mlflow-run; give RUN_DIR alone for a run directory")
    if args.run_dir is None:
        raise UsageError("give RUN_DIR (a training run's --run-dir) or --mlflow-run RUN_ID --tracking-uri URI")
    return Path(args.run_dir)


def _json_path(args: argparse.Namespace, run_dir: Path, summary: dict | None = None) -> Path:
    """--json, or the default under the run (which needs the checkpoint's step: ``summary``)."""
    if args.json is not None:
        return Path(args.json)
    folder = run_dir / "evaluations"
    if summary is None:
        return folder / "x.json"  # only its folder is checked before the evaluation
    mode = "deterministic" if summary["deterministic"] else "stochastic"
    return folder / f"step-{summary['checkpoint_step']:012d}-seed-{summary['seed']}-{mode}.json"


def _one_line(exc: Exception) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Evaluate a run from the command line; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    import torch

    torch.set_num_threads(int(os.environ.get("RLHP_TORCH_THREADS", "1")))
    try:
        run_dir = _run_dir_from_args(args)
        read_config(run_dir)  # a bad RUN_DIR is named before the output folder is
        json_path = _json_path(args, run_dir)
        if json_path.is_dir():
            raise UsageError(f"--json {str(json_path)!r} is a folder; expected a file name")
        try:
            check_writable_dir(json_path.parent)
        except ValueError as exc:
            raise UsageError(f"{'--json' if args.json else 'the summary folder'} {str(json_path.parent)!r}: {exc}"
                             + ("" if args.json else "; pass --json PATH to write it elsewhere")) from None
        from .train import resolve_device

        device = resolve_device(args.device)
        summary = evaluate(run_dir, episodes=args.episodes, deterministic=args.deterministic, seed=args.seed,
                           num_envs=args.num_envs, max_steps=args.max_steps, video=args.video,
                           video_frames=args.video_frames, fps=args.fps, device=device,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
    except ValueError as exc:  # UsageError, RunError, CheckpointError, a bad --device
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    json_path = _json_path(args, run_dir, summary)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(json_path, json.dumps(summary, indent=2, default=str) + "\n")
    print(describe(summary))
    print(f"summary: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
