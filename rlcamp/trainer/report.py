"""What a run leaves behind, read back: the end-of-run summary and ``rlcamp report RUN_DIR``.

Both read only the run folder (``metrics.jsonl``, ``val_generations.jsonl``, ``resolved_config.yaml``,
the checkpoints), so they work on any run, finished, resumed or still training. The report is one
self-contained HTML page (``<run>/report.html``): PNG plots embedded as data URIs, the validation
samples as tables, no scripts and nothing fetched.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlcamp.trainer.tracking import table_file_stem

VAL_TABLE_FILE = table_file_stem("val/generations") + ".jsonl"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a jsonl file; a line cut short (a run writing it right now) is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """One row per step, in step order; a step logged twice (a resumed run redid it) keeps its last row."""
    by_step: dict[int, dict[str, Any]] = {}
    for row in read_jsonl(run_dir / "metrics.jsonl"):
        by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    from rlcamp.trainer import checkpoint as ckpt

    try:
        return ckpt.latest(run_dir)
    except (FileNotFoundError, ValueError):
        return None


@dataclass(frozen=True)
class Summary:
    run_dir: Path
    steps: int  # the last step logged
    acc_before: float | None  # val/acc of the first validation
    acc_after: float | None  # val/acc of the last one
    step_before: int | None
    step_after: int | None
    checkpoint: Path | None

    def lines(self, with_report: bool = True) -> list[str]:
        out = []
        if self.acc_before is not None and self.step_after != self.step_before:
            out.append(f"validation accuracy (val/acc): step {self.step_before} {self.acc_before:.1%} -> "
                       f"step {self.step_after} {self.acc_after:.1%}")
        elif self.acc_after is not None:
            out.append(f"validation accuracy (val/acc): {self.acc_after:.1%} at step {self.step_after}")
        if self.checkpoint is not None:
            out.append(f"checkpoint: {self.checkpoint}/ (actor/huggingface loads with transformers)")
        report = self.run_dir / "report.html"
        where = f"; report: {report}" if report.exists() else f"; report: `rlcamp report {self.run_dir}`"
        out.append(f"metrics: {self.run_dir / 'metrics.jsonl'}" + (where if with_report else ""))
        out.append(f"resolved config: {self.run_dir / 'resolved_config.yaml'}")
        return out


def summarize(run_dir: Path) -> Summary:
    rows = read_metrics(run_dir)
    validated = [r for r in rows if "val/acc" in r]
    first, last = (validated[0], validated[-1]) if validated else (None, None)
    return Summary(run_dir, rows[-1]["step"] if rows else 0,
                   first["val/acc"] if first else None, last["val/acc"] if last else None,
                   first["step"] if first else None, last["step"] if last else None, latest_checkpoint(run_dir))


# ------------------------------------------------------------------------------- plots
# (title, y label, metric names or regular expressions over them)
PANELS: list[tuple[str, str, list[str]]] = [
    ("Score and validation accuracy", "", ["critic/score/mean", "val/acc", r"val-core/.+/mean@\d+"]),
    ("Policy and critic losses", "", ["actor/pg_loss", "critic/vf_loss", "actor/kl_loss"]),
    ("KL", "nats", ["actor/ppo_kl", "actor/kl_loss", "actor/reward_kl_penalty", "rollout/log_prob_kl"]),
    ("Entropy", "nats per token", ["actor/entropy"]),
    ("Response length", "tokens", ["response_length/mean", "response_length/max", "response_length/min"]),
    ("Clip fractions", "fraction", ["actor/pg_clipfrac", "actor/pg_clipfrac_lower", "critic/vf_clipfrac",
                                    "response_length/clip_ratio"]),
    ("Gradient norms (before clipping)", "", ["actor/grad_norm", "critic/grad_norm"]),
    ("Tokens per second", "tokens/s", ["perf/throughput", "perf/gen_tokens_per_s", r"perf/.+_tokens_per_s"]),
]
STAGES = ["gen", "reward", "reward_wait", "old_log_prob", "ref", "values", "adv", "update_critic", "update_actor",
          "dump_rollout_generations", "testing"]


def _series(rows: list[dict[str, Any]], patterns: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    keys: list[str] = []
    names = sorted({k for r in rows for k in r})
    for pattern in patterns:
        matched = [pattern] if pattern in names else [k for k in names if re.fullmatch(pattern, k)]
        keys += [k for k in matched if k not in keys]
    out = {}
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if points:
            out[key] = ([p[0] for p in points], [float(p[1]) for p in points])
    return out


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def plots(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(title, base64 PNG) for each panel that has data."""
    import warnings

    with warnings.catch_warnings():  # numpy's float limits, first read under the trainer's flush-to-zero
        warnings.filterwarnings("ignore", "The value of the smallest subnormal", UserWarning)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    out = []
    for title, ylabel, patterns in PANELS:
        series = _series(rows, patterns)
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        for key, (steps, values) in series.items():
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=key)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        out.append((title, _png(fig)))
        plt.close(fig)
    timed = [(s, _series(rows, [f"timing_s/{s}"]).get(f"timing_s/{s}")) for s in STAGES]
    timed = [(s, points) for s, points in timed if points]
    if timed:
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        bottom: dict[int, float] = {}
        for stage, (steps, values) in timed:
            ax.bar(steps, values, bottom=[bottom.get(s, 0.0) for s in steps], label=stage)
            for s, v in zip(steps, values):
                bottom[s] = bottom.get(s, 0.0) + v
        ax.set(title="Seconds per stage", xlabel="step", ylabel="s")
        ax.legend(fontsize=7, ncol=2)
        out.append(("Seconds per stage", _png(fig)))
        plt.close(fig)
    return out


# -------------------------------------------------------------------------------- page
_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:1em}
figure{margin:0;border:1px solid #ddd;padding:.5em}figure img{width:100%}
table{border-collapse:collapse;font-size:.85em;width:100%}td,th{border:1px solid #ccc;padding:4px;vertical-align:top;
text-align:left}td pre{white-space:pre-wrap;margin:0}.muted{color:#666}"""


def _samples_html(samples: list[dict[str, Any]]) -> str:
    if not samples:
        return ('<p class="muted">No validation samples: set <code>trainer.log_val_generations=N</code> to keep '
                "N of them at every validation.</p>")
    by_step: dict[int, list[dict[str, Any]]] = {}
    for s in samples:
        by_step.setdefault(int(s["step"]), []).append(s)
    parts = []
    for i, step in enumerate(sorted(by_step, reverse=True)):
        rows = "".join(
            "<tr>" + "".join(f"<td><pre>{html.escape(str(s.get(k, '')))}</pre></td>"
                             for k in ("input", "output", "ground_truth", "score")) + "</tr>" for s in by_step[step])
        table = f"<table><tr><th>input</th><th>output</th><th>ground truth</th><th>score</th></tr>{rows}</table>"
        parts.append(f"<details{' open' if i == 0 else ''}><summary>step {step}</summary>{table}</details>")
    return "".join(parts)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write ``<run_dir>/report.html`` (or ``out``) from what the run folder holds; returns its path."""
    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "metrics.jsonl").exists():
        raise FileNotFoundError(f"{run_dir} holds no metrics.jsonl: is it a run folder (trainer.default_local_dir)?")
    rows = read_metrics(run_dir)
    summary = summarize(run_dir)
    figures = "".join(f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{b64}"></figure>'
                      for t, b64 in plots(rows))
    facts = "".join(f"<li>{html.escape(line)}</li>" for line in summary.lines(with_report=False))
    name = html.escape(run_dir.name)
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>rlcamp run {name}</title>"
            f"<style>{_STYLE}</style></head><body><h1>rlcamp run: {name}</h1>"
            f"<p class='muted'>{html.escape(str(run_dir.resolve()))}; {len(rows)} logged step(s), last step "
            f"{summary.steps}</p><ul>{facts}</ul><h2>Training curves</h2>"
            f"<div class='grid'>{figures or '<p>No metrics yet.</p>'}</div>"
            f"<h2>Validation samples</h2>{_samples_html(read_jsonl(run_dir / VAL_TABLE_FILE))}</body></html>")
    out = Path(out) if out is not None else run_dir / "report.html"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page)
    tmp.replace(out)
    return out
