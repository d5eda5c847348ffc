"""The run report: PNG plots and one self-contained HTML file (plots embedded, opens offline).

    thinkrl report runs/demo          # rebuilds RUN/report.html and RUN/plots/*.png from metrics.jsonl

Curves come from ``metrics.jsonl`` (training steps, and ``eval/*`` records when evaluation ran during training);
the before/after table, mode mix and sample completions come from ``summary.json`` when the run wrote one
(``thinkrl demo`` does).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from thinkrl.train.logging import read_metrics

# (metric key, title, y label); a plot is drawn only when the run logged the key.
CURVES = [
    ("reward/mean", "Reward (training samples)", "mean reward"),
    ("accuracy", "Accuracy (training samples)", "share correct"),
    ("eval/pass@1", "Held-out pass@1", "pass@1"),
    ("format_rate", "Format compliance (training samples)", "share in R1 format"),
    ("completion/len_mean", "Mean response length", "tokens"),
    ("completion/reflection_rate", "Reflection words", "share of responses"),
    ("train/kl", "KL to the reference", "k3 estimate"),
    ("train/entropy", "Policy entropy", "nats / token"),
]


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)):
            xs.append(int(r["step"]))
            ys.append(float(v))
    return xs, ys


def plot_curves(records: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """One PNG per curve that the run logged; returns {metric key: path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, title, ylabel in CURVES:
        xs, ys = _series(records, key)
        if not xs:
            continue
        fig, ax = plt.subplots(figsize=(5.2, 3.2), dpi=110)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, linewidth=1.6, color="#2563eb")
        if len(ys) >= 8 and not key.startswith(
            "eval/"
        ):  # a moving average shows the trend through sampling noise
            w = max(3, len(ys) // 10)
            smooth = [
                sum(ys[max(0, i - w + 1) : i + 1]) / len(ys[max(0, i - w + 1) : i + 1])
                for i in range(len(ys))
            ]
            ax.plot(xs, smooth, linewidth=2.4, color="#dc2626", label=f"moving average ({w})")
            ax.legend(loc="best", fontsize=8)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / (key.replace("/", "_").replace("@", "_at_") + ".png")
        fig.savefig(path)
        plt.close(fig)
        paths[key] = path
    return paths


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def comparison_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The before/after table: one row per metric, one column per evaluated stage (e.g. base, after RL)."""
    stages = summary.get("evals", {})
    names = list(stages)
    metrics: list[str] = []
    for s in stages.values():
        metrics.extend(k for k in s if k not in metrics and isinstance(s[k], (int, float)))
    return ["metric", *names], [[m, *[stages[n].get(m, "") for n in names]] for m in metrics]


def format_comparison(summary: dict[str, Any]) -> str:
    """The before/after table as plain text, for the terminal."""
    headers, rows = comparison_rows(summary)
    cells = [headers] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def build_report(run_dir: str | Path) -> Path:
    """Write ``RUN/plots/*.png`` and ``RUN/report.html``; returns the HTML path."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    plots = plot_curves(records, run_dir / "plots")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>thinkrl report</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#111;padding:0 1em}",
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}",
        "td:first-child,th:first-child{text-align:left}.grid{display:flex;flex-wrap:wrap;gap:8px}",
        "pre{background:#f6f6f6;padding:8px;white-space:pre-wrap;font-size:12px;border-radius:4px}",
        ".note{color:#555;font-size:14px}</style></head><body>",
        f"<h1>{html.escape(summary.get('title', 'thinkrl run report'))}</h1>",
        f"<p class='note'>Run directory: {html.escape(str(run_dir))}. {len(records)} metric records.</p>",
    ]
    if summary.get("description"):
        parts.append(f"<p>{html.escape(summary['description'])}</p>")
    if summary.get("evals"):
        headers, rows = comparison_rows(summary)
        parts += ["<h2>Before and after RL</h2>", _table(headers, rows)]
    if summary.get("protocol"):
        parts.append(f"<p class='note'>{html.escape(summary['protocol'])}</p>")
    if plots:
        parts.append("<h2>Training curves</h2><div class='grid'>")
        for key, path in plots.items():
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(key)}' src='data:image/png;base64,{data}' width='520'>")
        parts.append("</div>")
    for stage, samples in summary.get("samples", {}).items():
        parts.append(f"<h2>Sample completions: {html.escape(stage)}</h2>")
        for s in samples:
            verdict = "correct" if s.get("correct") else "wrong"
            parts.append(
                f"<p class='note'>{html.escape(s.get('question', ''))} — gold {html.escape(str(s.get('answer', '')))}"
                f" — {verdict}</p><pre>{html.escape(s.get('completion', ''))}</pre>"
            )
    if summary.get("notes"):
        parts += ["<h2>Notes</h2>", "".join(f"<p>{html.escape(n)}</p>" for n in summary["notes"])]
    parts.append("</body></html>")
    out = run_dir / "report.html"
    out.write_text("\n".join(parts))
    return out
