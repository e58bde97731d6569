"""Each tracker of trainer.logger, for real and offline: a separate process logs three steps and a
table through rlcamp's Tracking, and the test reads the run back with the tracker's own reader."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path


from rlcamp.trainer.tracking import TRACKERS, ConsoleTracker, RunInfo, mlflow_key, tracker_needs, tracker_problems

ROOT = Path(__file__).resolve().parents[2]
STEPS = {0: {"val-core/openai/gsm8k/reward/mean@1": 0.25, "val/acc": 0.25},
         1: {"critic/score/mean": 0.5, "timing_s/gen": 1.5},
         2: {"critic/score/mean": 0.75, "timing_s/gen": 1.25, "val/acc": 0.5}}
COLUMNS = ["input", "output", "ground_truth", "score"]
ROWS = [["What is 2 + 2?", "#### 4", "4", 1.0], ["What is 3 + 3?", "#### 5", "6", 0.0]]

WRITER = """
import json, sys
from pathlib import Path
from rlcamp.trainer.tracking import RunInfo, Tracking
names, run_dir = json.loads(sys.argv[1]), Path(sys.argv[2])
config = {"data": {"train_batch_size": 8}, "trainer": {"logger": names, "project_name": "proj"}}
tracking = Tracking(names, RunInfo("proj", "exp1", run_dir, config, total_steps=2))
for step, metrics in json.loads(sys.argv[3]).items():
    tracking.log(metrics, int(step))
tracking.log_table("val/generations", json.loads(sys.argv[4]), json.loads(sys.argv[5]), 2)
tracking.close()
"""


def write_run(names: list[str], run_dir: Path, **env) -> subprocess.CompletedProcess:
    """The writer runs as a user's run would: its own process, without pytest's variables (clearml
    behaves differently, and waits forever on close, when PYTEST_CURRENT_TEST is set)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    try:
        result = subprocess.run([sys.executable, "-c", WRITER, json.dumps(names), str(run_dir), json.dumps(STEPS),
                                 json.dumps(COLUMNS), json.dumps(ROWS)], capture_output=True, text=True,
                                cwd=run_dir.parent, env=dict(base, PYTHONPATH=str(ROOT), **env), timeout=240)
    except subprocess.TimeoutExpired as exc:  # say where it hung
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise AssertionError(f"the {names} writer did not finish in 240 s; stdout: {out[-2000:]}\n"
                             f"stderr: {err[-3000:]}\nenvironment: {sorted(base)}") from None
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_run_record_is_always_written_and_console_shows_eta(tmp_path):
    result = write_run(["console"], tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[2]["critic/score/mean"] == 0.75
    table = [json.loads(line) for line in (tmp_path / "run" / "val_generations.jsonl").read_text().splitlines()]
    assert table[0] == {"step": 2, "input": "What is 2 + 2?", "output": "#### 4", "ground_truth": "4", "score": 1.0}
    lines = result.stdout.splitlines()
    assert lines[0].startswith("step    0/2 [") and "val acc 0.25" in lines[0]
    assert "ETA" in lines[1] and "ETA" not in lines[2]  # after the first timed step, until the last
    assert "val/generations (step 2):" in result.stdout and "output: #### 4" in result.stdout


def test_console_eta_counts_from_the_step_resumed_at():
    out = io.StringIO()
    console = ConsoleTracker(RunInfo("p", "e", Path("."), {}, total_steps=10), stream=out)
    console.log({"timing_s/step": 1.0}, 4)
    console.start -= 60  # a minute per step since step 4
    console.log({"timing_s/step": 1.0}, 5)
    assert out.getvalue().splitlines()[1].endswith("1m00s, ETA 5m00s")


def test_file_logger_writes_verls_format_where_verl_does(tmp_path):
    write_run(["file"], tmp_path / "run", VERL_FILE_LOGGER_ROOT=str(tmp_path / "root"))
    rows = [json.loads(line) for line in (tmp_path / "root" / "proj" / "exp1.jsonl").read_text().splitlines()]
    assert rows[1] == {"step": 1, "data": STEPS[1]}


def _wandb_records(path: Path):
    """The records of a .wandb file: LevelDB log format (32 KiB blocks, records of a 7-byte header:
    crc32, length, type FULL=1/FIRST=2/MIDDLE=3/LAST=4) after a 7-byte ':W&B' file header."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_folder_reads_back(tmp_path):
    run_dir = tmp_path / "run"
    write_run(["wandb"], run_dir, WANDB_MODE="offline", WANDB_SILENT="true")
    (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")  # WANDB_DIR defaults to the run folder
    history, config, table_logged = {}, {}, False
    for record in _wandb_records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items: dict = {}
            for item in record.history.item:
                path = [item.key] if item.key else list(item.nested_key)  # a table's fields are nested under its name
                node = items
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = json.loads(item.value_json)
            table_logged = table_logged or items.get("val/generations", {}).get("_type") == "table-file"
            history[items["_step"]] = items
        elif kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            assert record.run.project == "proj" and record.run.display_name == "exp1"
    assert history[1]["critic/score/mean"] == 0.5 and history[0]["val-core/openai/gsm8k/reward/mean@1"] == 0.25
    assert config["data"] == {"train_batch_size": 8}
    assert table_logged
    (table,) = wandb_file.parent.glob("files/media/table/val/generations_*.table.json")
    assert json.loads(table.read_text())["data"] == ROWS


def test_tensorboard_event_files_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_run(["tensorboard"], tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))  # TENSORBOARD_DIR defaults there
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("critic/score/mean")] == [(1, 0.5), (2, 0.75)]
    assert "val-core/openai/gsm8k/reward/mean@1" in events.Tags()["scalars"]
    text = events.Tensors("val/generations/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| What is 2 + 2? | #### 4 | 4 | 1.0 |" in text


def test_mlflow_local_store_reads_back_through_its_client(tmp_path):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    write_run(["mlflow"], run_dir)
    client = MlflowClient(f"sqlite:///{run_dir}/mlflow.db")  # MLFLOW_TRACKING_URI's default here
    (run,) = client.search_runs([client.get_experiment_by_name("proj").experiment_id])
    assert run.info.run_name == "exp1" and run.data.params["data/train_batch_size"] == "8"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "critic/score/mean")] == \
        [(1, 0.5), (2, 0.75)]
    assert run.data.metrics[mlflow_key("val-core/openai/gsm8k/reward/mean@1")] == 0.25
    assert mlflow_key("val-core/openai/gsm8k/reward/mean@1") == "val-core/openai/gsm8k/reward/mean_at_1"
    (artifact,) = client.list_artifacts(run.info.run_id, "val_generations")
    table = json.loads(Path(client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path))).read_text())
    assert table == {"columns": COLUMNS, "data": ROWS}


def test_swanlab_local_mode_reads_back(tmp_path):
    run_dir = tmp_path / "run"
    write_run(["swanlab"], run_dir, SWANLAB_MODE="local")
    log_dir = run_dir / "swanlog"  # SWANLAB_LOG_DIR defaults there
    db = sqlite3.connect(log_dir / "runs.swanlab")  # swanlab's local dashboard store
    (name, run_id), = db.execute("select name, run_id from experiment").fetchall()
    assert name == "exp1"
    folders = dict(db.execute("select name, folder from tag").fetchall())
    series = [json.loads(line) for line in (log_dir / run_id / "logs" / folders["critic/score/mean"] / "1000.log")
              .read_text().splitlines()]
    assert [(r["index"], r["data"]) for r in series] == [(1, 0.5), (2, 0.75)]
    (table,) = (log_dir / run_id / "media" / "echarts").glob("*.json")  # the table, as swanlab's echarts Table
    assert json.loads(table.read_text())["rowData"][0] == {"input": "What is 2 + 2?", "output": "#### 4",
                                                          "ground_truth": "4", "score": "1.0"}
    assert "train_batch_size" in (log_dir / run_id / "files" / "config.yaml").read_text()


def test_trackio_local_database_reads_back(tmp_path):
    run_dir = tmp_path / "run"
    env = {"TRACKIO_DIR": str(tmp_path / "trackio")}
    write_run(["trackio"], run_dir, **env)
    reader = ("import json; from trackio.sqlite_storage import SQLiteStorage as S; "
              "print(json.dumps([S.get_logs('proj', 'exp1'), S.get_run_config('proj', 'exp1')], default=str))")
    out = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, check=True,
                         env=dict(os.environ, **env)).stdout
    logs, config = json.loads(out.splitlines()[-1])
    scores = [(row["step"], row["critic/score/mean"]) for row in logs if "critic/score/mean" in row]
    assert scores == [(1, 0.5), (2, 0.75)]
    assert any("val/generations" in row for row in logs)
    assert config["data"] == {"train_batch_size": 8}


def test_clearml_offline_session_reads_back(tmp_path):
    cache = tmp_path / "clearml"
    write_run(["clearml"], tmp_path / "run", CLEARML_OFFLINE_MODE="1", CLEARML_CACHE_DIR=str(cache))
    (session,) = [p for p in (cache / "offline").iterdir() if p.is_dir()]
    events = [json.loads(line) for line in (session / "metrics.jsonl").read_text().splitlines()]
    flat = [e for batch in events for e in (batch if isinstance(batch, list) else [batch])]
    scalars = [(e["iter"], e["value"]) for e in flat if e.get("metric") == "critic" and e.get("variant") == "score/mean"]
    assert scalars == [(1, 0.5), (2, 0.75)]
    assert json.loads((session / "task.json").read_text())["name"] == "exp1"


def test_missing_packages_and_accounts_fail_at_config_time(monkeypatch):
    from dataclasses import replace

    monkeypatch.setitem(TRACKERS, "wandb", replace(TRACKERS["wandb"], modules=("wandb_is_not_installed_here",)))
    assert tracker_problems(["console", "wandb"]) == []  # valid names: what is missing is this machine's
    assert tracker_needs(["console", "wandb"]) == [
        "trainer.logger 'wandb' needs the package(s) ['wandb_is_not_installed_here']: pip install 'rlcamp[wandb]'"]
    for var in ("SWANLAB_API_KEY", "SWANLAB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.netrc
    (problem,) = tracker_needs(["swanlab"])
    assert "SWANLAB_MODE=local" in problem
    monkeypatch.setenv("SWANLAB_MODE", "local")
    assert tracker_needs(["swanlab"]) == []
    assert "volcengine_ml_platform" in tracker_problems(["vemlp_wandb"])[0]
