"""Where a run's metrics go: the run record, the console, and the experiment trackers users have.

``trainer.logger`` names them with verl's names (``console``, ``file``, ``wandb``, ``tensorboard``,
``mlflow``, ``swanlab``, ``trackio``, ``clearml``). Each is a small class behind one protocol
(``log`` scalars, ``log_table`` rows, ``close``), picked by name from ``TRACKERS`` and imported only
when used. Whatever the list says, the run folder always gets ``metrics.jsonl`` and its tables
(``RunRecord``): the run's own record, which ``rlcamp report``, the end-of-run summary and
``rlcamp quickstart`` read.

Each tracker reads the environment variables verl documents for it (``WANDB_*``,
``TENSORBOARD_DIR``, ``MLFLOW_TRACKING_URI``/``MLFLOW_RUN_ID``, ``SWANLAB_API_KEY``/``SWANLAB_MODE``/
``SWANLAB_LOG_DIR``, ``TRACKIO_DIR``/``TRACKIO_SPACE_ID``, ``CLEARML_*``, ``VERL_FILE_LOGGER_PATH``/
``VERL_FILE_LOGGER_ROOT``) and logs the resolved config as the run's parameters. Where verl's
default location is the working directory, rlcamp's is the run folder.
"""

from __future__ import annotations

import json
import netrc
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from rlcamp.utils.imports import has_module


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunInfo:
    """What every tracker is started with."""

    project: str
    experiment: str
    run_dir: Path
    config: dict[str, Any]  # the resolved config, as nested dicts
    total_steps: int


def _flat(tree: dict[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """Nested config -> one level (``actor_rollout_ref/actor/optim/lr``); lists as JSON text."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flat(value, sep, name + sep))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out


# ------------------------------------------------------------------------------- built in
HEADLINE = [("critic/score/mean", "score"), ("val/acc", "val acc"), ("actor/pg_loss", "pg"),
            ("actor/ppo_kl", "kl"), ("actor/entropy", "ent"), ("critic/vf_loss", "vf"),
            ("response_length/mean", "len"), ("timing_s/step", "s/step")]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ConsoleTracker:
    """One line per step: progress bar, headline metrics, elapsed time and the ETA; tables as text."""

    def __init__(self, info: RunInfo, stream=None):
        self.total, self.stream = info.total_steps, stream
        self.start, self.first_step = time.monotonic(), None

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def log(self, metrics: dict[str, float], step: int) -> None:
        now = time.monotonic()
        if self.first_step is None:  # the first line seen (step 0's validation, or the step resumed at)
            self.first_step, self.start = step, now
        done = min(step / max(self.total, 1), 1.0)
        parts = [f"step {step:>4}/{self.total} [{'=' * int(done * 20):<20}] {done:4.0%}"]
        parts += [f"{short} {metrics[key]:.4g}" for key, short in HEADLINE if key in metrics]
        elapsed = now - self.start
        timing = _duration(elapsed)
        if step > self.first_step and step < self.total:
            timing += f", ETA {_duration(elapsed / (step - self.first_step) * (self.total - step))}"
        parts.append(timing)
        self._print(" | ".join(parts))

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self._print(f"{name} (step {step}):")
        for i, row in enumerate(rows, 1):
            cells = dict(zip(columns, row))
            head = " | ".join(f"{k} {_short(cells[k], 40)}" for k in columns if k not in ("step", "input", "output"))
            self._print(f"  [{i}] {head}\n      input:  {_short(cells.get('input', ''), 200)}\n"
                        f"      output: {_short(cells.get('output', ''), 200)}")

    def close(self) -> None:
        pass


def _short(value: Any, limit: int) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class RunRecord:
    """``<run>/metrics.jsonl`` (one line per logged step) and ``<run>/<table>.jsonl`` (one line per row)."""

    def __init__(self, info: RunInfo):
        info.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = info.run_dir
        self.path = info.run_dir / "metrics.jsonl"
        _drop_cut_line(self.path)
        self.file = self.path.open("a")

    def log(self, metrics: dict[str, float], step: int) -> None:
        try:
            self.file.write(json.dumps({"step": step, **metrics}) + "\n")
            self.file.flush()
        except OSError as exc:  # a full or read-only disk: say where, not a traceback from deep inside
            from rlcamp.trainer.checkpoint import free_space
            from rlcamp.trainer.run import RunFolderError

            raise RunFolderError(
                f"writing step {step}'s metrics to {self.path} failed ({exc.strerror or exc}); "
                f"{free_space(self.run_dir)} on its disk. The checkpoints already written are intact: free space "
                "or make the folder writable, then resume with trainer.resume_mode=auto") from exc

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        with (self.run_dir / f"{table_file_stem(name)}.jsonl").open("a") as f:
            for row in rows:
                f.write(json.dumps({"step": step, **dict(zip(columns, row))}, ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:  # its last write failed already, and said so
            pass


def _drop_cut_line(path: Path) -> None:
    """A run stopped in the middle of a line (a full disk) left it cut; the next line must not join it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)
    print(f"rlcamp: warning: {path} ended in a cut line ({len(data) - keep} bytes); dropped it", flush=True)


def table_file_stem(name: str) -> str:
    """``val/generations`` -> ``val_generations``: the run folder's file for that table."""
    return re.sub(r"[^\w.-]+", "_", name)


class FileTracker:
    """verl's ``file`` logger: ``{"step": N, "data": {...}}`` lines at ``$VERL_FILE_LOGGER_PATH``, else
    ``$VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl`` (root default: the working directory)."""

    def __init__(self, info: RunInfo):
        path = os.environ.get("VERL_FILE_LOGGER_PATH")
        if path is None:
            root = Path(os.environ.get("VERL_FILE_LOGGER_ROOT", ".")).expanduser()
            path = root / info.project / f"{info.experiment}.jsonl"
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("a")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.file.write(json.dumps({"step": step, "data": metrics}) + "\n")
        self.file.flush()

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        pass  # verl's file logger has no tables; the run record keeps them

    def close(self) -> None:
        self.file.close()


# ------------------------------------------------------------------------- third party
class WandbTracker:
    """Weights & Biases. ``WANDB_MODE=offline`` needs no account; ``WANDB_DIR`` (default: the run
    folder), ``WANDB_ENTITY``, ``WANDB_API_KEY`` as wandb documents them."""

    def __init__(self, info: RunInfo):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=info.project, name=info.experiment, entity=os.environ.get("WANDB_ENTITY"),
                              config=info.config, dir=os.environ.get("WANDB_DIR", str(info.run_dir)),
                              reinit="finish_previous")
        self.rows: dict[str, list[list[Any]]] = {}

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        # a logged wandb Table is frozen: log one holding every validation's rows so far
        self.rows.setdefault(name, []).extend(rows)
        self.run.log({name: self.wandb.Table(columns=columns, data=self.rows[name])}, step=step)

    def close(self) -> None:
        self.run.finish()


class TensorboardTracker:
    """TensorBoard event files in ``$TENSORBOARD_DIR`` (default: ``<run>/tensorboard``); tables as text."""

    def __init__(self, info: RunInfo):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(os.environ.get("TENSORBOARD_DIR", info.run_dir / "tensorboard")).expanduser()
        self.writer = SummaryWriter(str(self.dir))
        self.writer.add_text("config", "```yaml\n" + json.dumps(info.config, indent=1) + "\n```", 0)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        cell = lambda v: str(v).replace("|", "\\|").replace("\n", "<br>")  # noqa: E731
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        self.writer.add_text(name, "\n".join(lines), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


_MLFLOW_BAD = re.compile(r"[^/\w.\- :]")


def mlflow_key(key: str) -> str:
    """A metric name MLflow accepts (as verl rewrites it): ``@`` -> ``_at_``, other odd characters -> ``_``."""
    return _MLFLOW_BAD.sub("_", re.sub(r"/+", "/", key.replace("@", "_at_")))


class MlflowTracker:
    """MLflow: ``$MLFLOW_TRACKING_URI`` (default: ``sqlite:///<run>/mlflow.db``), experiment =
    project, run = experiment name, or the run ``$MLFLOW_RUN_ID``; tables as JSON artifacts."""

    def __init__(self, info: RunInfo):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{info.run_dir.resolve()}/mlflow.db"))
        run_id = os.environ.get("MLFLOW_RUN_ID")
        if run_id:
            mlflow.start_run(run_id=run_id)
        else:
            experiment = mlflow.get_experiment_by_name(info.project)
            experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(
                info.project, artifact_location=(info.run_dir.resolve() / "mlflow_artifacts").as_uri())
            mlflow.start_run(experiment_id=experiment_id, run_name=info.experiment)
        params = {k: str(v)[:6000] for k, v in _flat(info.config).items()}
        mlflow.log_params(params)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({mlflow_key(k): v for k, v in metrics.items()}, step=step)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.mlflow.log_dict({"columns": columns, "data": rows}, f"{table_file_stem(name)}/step_{step}.json")

    def close(self) -> None:
        self.mlflow.end_run()


class SwanlabTracker:
    """SwanLab: ``$SWANLAB_MODE`` (cloud, local, offline; default cloud, as verl), ``$SWANLAB_LOG_DIR``
    (default: ``<run>/swanlog``), ``$SWANLAB_API_KEY``."""

    def __init__(self, info: RunInfo):
        import swanlab

        self.swanlab = swanlab
        key = os.environ.get("SWANLAB_API_KEY")
        if key:
            swanlab.login(key)
        swanlab.init(project=info.project, experiment_name=info.experiment, config={"FRAMEWORK": "rlcamp", **info.config},
                     logdir=os.environ.get("SWANLAB_LOG_DIR", str(info.run_dir / "swanlog")),
                     mode=os.environ.get("SWANLAB_MODE", "cloud"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.swanlab.log(metrics, step=step)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        table = self.swanlab.echarts.Table()
        table.add(headers=columns, rows=[[str(v) for v in row] for row in rows])
        self.swanlab.log({name: table}, step=step)

    def close(self) -> None:
        self.swanlab.finish()


class TrackioTracker:
    """Trackio (local first): ``$TRACKIO_DIR`` for its database, ``$TRACKIO_SPACE_ID`` to sync to a Space."""

    def __init__(self, info: RunInfo):
        import trackio

        self.trackio = trackio
        trackio.init(project=info.project, name=info.experiment, config=info.config,
                     space_id=os.environ.get("TRACKIO_SPACE_ID"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.trackio.log(metrics, step=step)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.trackio.log({name: self.trackio.Table(columns=columns, data=rows)}, step=step)

    def close(self) -> None:
        self.trackio.finish()


class ClearmlTracker:
    """ClearML: a task named after the experiment in the project; ``clearml.conf`` / ``CLEARML_API_*``
    for a server, ``CLEARML_OFFLINE_MODE=1`` for a local session folder. Scalars are split at the
    first ``/`` into title and series, as verl does."""

    def __init__(self, info: RunInfo):
        from clearml import Task

        # clearml detects the git repository on a thread that runs git in a subprocess while Task.init
        # forks its background reporter: a fork in the middle of that Popen deadlocked the run's close
        # on this machine (2026-12-01, clearml 1.x offline mode). Detecting it before the fork avoids that.
        if hasattr(Task, "_Task__detect_repo_async"):
            Task._Task__detect_repo_async = False
        self.task = Task.init(project_name=info.project, task_name=info.experiment, output_uri=False,
                              auto_connect_frameworks=False, auto_resource_monitoring=False,
                              auto_connect_streams=False)
        self.task.connect_configuration(info.config, name="config")
        self.logger = self.task.get_logger()

    @staticmethod
    def _split(key: str) -> tuple[str, str]:
        title, _, series = key.partition("/")
        return title, series or title

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            title, series = self._split(key)
            self.logger.report_scalar(title=title, series=series, value=value, iteration=step)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        title, series = self._split(name)
        self.logger.report_table(title=title, series=series, iteration=step,
                                 table_plot=[columns] + [[str(v) for v in row] for row in rows])

    def close(self) -> None:
        self.task.close()


# ------------------------------------------------------------------------------ registry
def _no_account_problem(env_ok: Callable[[], bool], message: str) -> Callable[[], str | None]:
    return lambda: None if env_ok() else message


def _netrc_has(host: str) -> bool:
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _wandb_ready() -> bool:
    return (os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun")
            or bool(os.environ.get("WANDB_API_KEY")) or _netrc_has("api.wandb.ai"))


def _swanlab_ready() -> bool:
    return (os.environ.get("SWANLAB_MODE", "cloud").lower() in ("local", "offline", "disabled")
            or bool(os.environ.get("SWANLAB_API_KEY")) or _netrc_has("api.swanlab.cn"))


def _clearml_ready() -> bool:
    return (os.environ.get("CLEARML_OFFLINE_MODE", "").lower() in ("1", "true", "yes")
            or bool(os.environ.get("CLEARML_API_ACCESS_KEY"))
            or Path(os.environ.get("CLEARML_CONFIG_FILE", "~/clearml.conf")).expanduser().exists())


@dataclass(frozen=True)
class TrackerSpec:
    cls: type
    modules: tuple[str, ...] = ()  # what must be importable
    extra: str | None = None  # pip install rlcamp[<extra>]
    account: Callable[[], str | None] = lambda: None  # a problem with the account settings, or None


TRACKERS: dict[str, TrackerSpec] = {
    "console": TrackerSpec(ConsoleTracker),
    "file": TrackerSpec(FileTracker),
    "wandb": TrackerSpec(WandbTracker, ("wandb",), "wandb", _no_account_problem(
        _wandb_ready, "wandb needs an account for online runs: set WANDB_API_KEY (or run `wandb login`), or "
        "WANDB_MODE=offline to write the run locally (sync it later with `wandb sync`)")),
    "tensorboard": TrackerSpec(TensorboardTracker, ("tensorboard",), "tensorboard"),
    "mlflow": TrackerSpec(MlflowTracker, ("mlflow", "sqlalchemy", "alembic"), "mlflow"),
    "swanlab": TrackerSpec(SwanlabTracker, ("swanlab", "swanboard"), "swanlab", _no_account_problem(
        _swanlab_ready, "swanlab's default SWANLAB_MODE=cloud needs an account: set SWANLAB_API_KEY, or "
        "SWANLAB_MODE=local (or offline) to keep the run on this machine")),
    "trackio": TrackerSpec(TrackioTracker, ("trackio",), "trackio"),
    "clearml": TrackerSpec(ClearmlTracker, ("clearml",), "clearml", _no_account_problem(
        _clearml_ready, "clearml needs a server: run `clearml-init` (or set CLEARML_API_ACCESS_KEY and its "
        "siblings), or CLEARML_OFFLINE_MODE=1 for a local session folder")),
}


def tracker_problems(names: list[str]) -> list[str]:
    """Logger names that do not exist: wrong on any machine."""
    problems = []
    for name in names:
        if name not in TRACKERS:
            hint = ("; vemlp_wandb needs ByteDance's volcengine_ml_platform, which is not published on PyPI: "
                    "use wandb" if name == "vemlp_wandb" else "")
            problems.append(f"trainer.logger has unknown logger '{name}'; known: {sorted(TRACKERS)}{hint}")
    return problems


def tracker_needs(names: list[str]) -> list[str]:
    """What this machine lacks for the named trackers to start: packages (with the install command)
    and account settings. A run stops on them before any model loads; a dry run lists them."""
    needs = []
    for name in dict.fromkeys(names):
        spec = TRACKERS.get(name)
        if spec is None:
            continue
        missing = [m for m in spec.modules if not has_module(m)]
        if missing:
            needs.append(f"trainer.logger '{name}' needs the package(s) {missing}: pip install 'rlcamp[{spec.extra}]'")
            continue
        account = spec.account()
        if account:
            needs.append(f"trainer.logger '{name}': {account}")
    return needs


class Tracking:
    """Fans metrics and tables out to the run record and the configured trackers (trainer.logger)."""

    def __init__(self, names: list[str], info: RunInfo):
        self.trackers: list[Tracker] = [RunRecord(info)]
        try:
            for name in dict.fromkeys(names):  # each once, in the order given
                self.trackers.append(TRACKERS[name].cls(info))
        except BaseException:
            self.close()
            raise

    def log(self, metrics: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(metrics, step)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        for tracker in self.trackers:
            tracker.log_table(name, columns, rows, step)

    def close(self) -> None:
        for tracker in reversed(self.trackers):
            tracker.close()
        self.trackers = []
