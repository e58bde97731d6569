"""The run report: written from a run folder, checked in a real headless Chromium (Debian's
chromium + chromium-driver, driven by selenium): the page loads and every plot renders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlcamp.trainer.report import PANELS, plots, read_metrics, summarize


def fake_run(folder: Path, steps: int = 6) -> Path:
    """A run folder as a run leaves it: metrics.jsonl (one step logged twice, the last line cut short
    by a run still writing), the validation samples, and a checkpoint."""
    folder.mkdir(parents=True)
    rows = [{"step": 0, "val/acc": 0.1, "val-core/rlcamp/arith/reward/mean@1": 0.2}]
    for s in range(1, steps + 1):
        rows.append({"step": s, "critic/score/mean": s / 10, "actor/pg_loss": 0.1, "actor/ppo_kl": 0.01 * s,
                     "actor/entropy": 1.0 - s / 20, "response_length/mean": 10 + s, "actor/pg_clipfrac": 0.05,
                     "actor/grad_norm": 1.5, "critic/grad_norm": 2.0, "timing_s/gen": 1.0, "timing_s/update_actor": 2.0,
                     "perf/throughput": 100.0 + s})
    rows[3]["critic/score/mean"] = -1.0  # redone after a resume: the second line of step 3 counts
    rows.append(dict(rows[3], **{"critic/score/mean": 0.3}))
    rows.append({"step": steps, "val/acc": 0.9, "val-core/rlcamp/arith/reward/mean@1": 0.95, **rows[steps]})
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"step": 7, "critic/sco'
    (folder / "metrics.jsonl").write_text(text)
    samples = [{"step": s, "input": "What is 1 + <b>1</b>?", "output": f"#### {s}", "ground_truth": "2", "score": 0.0}
               for s in (0, steps)]
    (folder / "val_generations.jsonl").write_text("\n".join(json.dumps(r) for r in samples) + "\n")
    (folder / f"global_step_{steps}").mkdir()
    (folder / "latest_checkpointed_iteration.txt").write_text(str(steps))
    return folder


def test_metrics_are_read_as_one_row_per_step_and_summarised(tmp_path):
    run = fake_run(tmp_path / "run")
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5, 6] and rows[3]["critic/score/mean"] == 0.3
    summary = summarize(run)
    assert (summary.acc_before, summary.acc_after, summary.step_after) == (0.1, 0.9, 6)
    assert summary.lines()[0] == "validation accuracy (val/acc): step 0 10.0% -> step 6 90.0%"
    assert summary.checkpoint == run / "global_step_6"
    assert len(PANELS) == 8 and len(plots(rows)) == 9  # every panel has data here, + seconds per stage
    assert len(plots(rows[:1])) == 1  # step 0 alone: the accuracy panel only


def _chromium():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/test.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_the_report_renders_in_a_real_browser(tmp_path):
    run = fake_run(tmp_path / "run")
    result = subprocess.run([sys.executable, "-m", "rlcamp.cli.main", "report", str(run)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    page = Path(result.stdout.strip())
    assert page == run / "report.html"
    assert "http" not in page.read_text().replace("http-equiv", "")  # self-contained: nothing fetched
    browser = _chromium()
    try:
        browser.get(page.as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) == 9
        for alt, complete, width, height in images:
            assert complete and width > 300 and height > 150, alt
        body = browser.find_element("tag name", "body").text
        assert "validation accuracy (val/acc): step 0 10.0% -> step 6 90.0%" in body
        assert "What is 1 + <b>1</b>?" in body  # escaped, shown as text
        assert "step 6" in body and "step 0" in body
    finally:
        browser.quit()


def test_report_of_a_folder_without_a_run_says_so(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rlcamp.cli.main", "report", str(tmp_path)], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "holds no metrics.jsonl" in result.stderr
