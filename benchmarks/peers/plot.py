"""Reward against wall-clock time for both sides of a peer run (every repeat drawn).

    python plot.py RESULTS.json OUT.png   (run by the harness with the TRL venv, which has matplotlib)
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(results_path: str, out_path: str) -> None:
    data = json.loads(open(results_path).read())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = iter(["tab:blue", "tab:green", "tab:purple"])
    for side, runs in data["results"].items():
        colour = "tab:orange" if side == "trl" else next(colours)
        for i, run in enumerate(runs):
            walls = [s["wall"] for s in run["steps"]]
            rewards = [s["reward"] for s in run["steps"]]
            label = run["side"] if side in ("rlcamp", "trl") else f"{run['side']}, {side.removeprefix('rlcamp ')}"
            ax.plot(walls, rewards, marker="o", color=colour, alpha=0.8, label=label if i == 0 else None)
    spec = data["spec"]
    ax.set_xlabel("wall-clock seconds (training steps only)")
    ax.set_ylabel("mean reward of the step's samples")
    ax.set_title(f"{spec['prompts_per_step']} prompts x {spec['samples']} samples x {spec['response_tokens']} tokens per step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
