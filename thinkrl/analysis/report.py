"""The run report: one self-contained HTML file (plots embedded, opens offline) and PNG plots.

    thinkrl report runs/demo          # rebuilds RUN/report.html and RUN/plots/*.png

Read top to bottom: the headline (held-out pass@1 before -> after with its interval, format rate, mean length,
mode mix), why training accuracy and held-out pass@1 differ, the curves, the run doctor's findings, sample
completions, a filterable table of what the model wrote during training (``completions.jsonl``), and every
metric labelled in words. Curves come from ``metrics.jsonl``; the before/after numbers from ``summary.json``
when the run wrote one (``thinkrl demo`` does), else from the first and last held-out evaluations in the
metrics.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from thinkrl.analysis import report_html as H
from thinkrl.analysis.completions import read_completions
from thinkrl.analysis.doctor import DIAGNOSES, diagnose, run_doctor_config
from thinkrl.analysis.jsonl import read_metrics
from thinkrl.analysis.labels import eval_label, label, section

# (metric key, title, y label); a plot is drawn only when the run logged the key.
CURVES = [
    ("reward/mean", "Reward (training samples)", "mean reward"),
    ("accuracy", "Accuracy (training samples)", "share correct"),
    ("eval/pass@1", "Held-out pass@1", "pass@1"),
    ("format_rate", "Format compliance (training samples)", "share in R1 format"),
    ("completion/len_mean", "Mean response length", "tokens"),
    ("completion/truncated_frac", "Cut at the length cap", "share of completions"),
    ("groups/zero_spread_frac", "Groups with no reward spread", "share of groups"),
    ("completion/reflection_rate", "Reflection words", "share of responses"),
    ("train/kl", "KL to the reference", "k3 estimate"),
    ("train/entropy", "Policy entropy", "nats / token"),
    ("tool/calls_per_sample", "Tool calls per sample (training samples)", "calls"),
    ("eval/tool_calls_mean", "Held-out tool calls per sample", "calls"),
    ("tool/error_rate", "Tool calls that failed", "share of calls"),
]
HEADLINE_ROWS = ("pass@1", "format_rate", "length_mean")
EMBED_LIMIT = 2000  # completions embedded in the page (whole steps, spread over the run)
EMBED_CHARS = 4000


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
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
        lo, hi = _series(records, key + "_ci95_lo"), _series(records, key + "_ci95_hi")
        if lo[0] and lo[0] == hi[0]:  # the evaluation's 95% interval
            ax.fill_between(lo[0], lo[1], hi[1], color="#2563eb", alpha=0.15, label="95% interval")
            ax.legend(loc="best", fontsize=8)
        if len(ys) >= 8 and not key.startswith("eval/"):  # a moving average shows the trend through noise
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


def comparison_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The before/after table: one row per metric (its key), one column per evaluated stage."""
    stages = summary.get("evals", {})
    names = list(stages)
    metrics: list[str] = []
    for s in stages.values():
        metrics.extend(k for k in s if k not in metrics and isinstance(s[k], (int, float)))
    return ["metric", *names], [[m, *[stages[n].get(m, "") for n in names]] for m in metrics]


def format_comparison(summary: dict[str, Any]) -> str:
    """The before/after table as plain text, for the terminal."""
    headers, rows = comparison_rows(summary)
    cells = [headers] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _stages(summary: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Held-out results per stage: summary.json's evals, else the first and last evaluation in the metrics."""
    if summary.get("evals"):
        return summary["evals"]
    evals = [r for r in records if isinstance(r.get("eval/pass@1"), (int, float))]
    out = {}
    for name, r in (("first evaluation", evals[0]), ("last evaluation", evals[-1])) if len(evals) > 1 else ():
        out[f"{name} (step {r['step']})"] = {k[5:]: v for k, v in r.items() if k.startswith("eval/")}
    return out


def _interval(s: dict[str, Any]) -> str:
    if "pass@1_ci95_lo" in s and "pass@1_ci95_hi" in s:
        return f"{s['pass@1_ci95_lo']:.3f}-{s['pass@1_ci95_hi']:.3f}"
    if "pass@1_se" in s:
        return f"±{1.96 * s['pass@1_se']:.3f}"
    return "?"


def headline(stages: dict[str, dict[str, Any]]) -> str:
    if not stages:
        return "<p class='note'>No held-out evaluation in this run (set data.eval and eval.every_steps).</p>"
    names = list(stages)
    first, last = stages[names[0]], stages[names[-1]]
    cards = []

    def arrow(key: str, spec: str) -> str:
        a, b = first.get(key), last.get(key)
        if a is None or b is None:
            return "—"
        return f"{a:{spec}} → {b:{spec}}" if len(names) > 1 else f"{b:{spec}}"

    span = f"{names[0]} → {names[-1]}" if len(names) > 1 else names[0]
    n = last.get("num_problems")
    ci = f"{_interval(first)} → {_interval(last)}" if len(names) > 1 else _interval(last)
    cards.append(H.card("Held-out pass@1", arrow("pass@1", ".3f"), f"95% interval {ci}"))
    cards.append(H.card("Held-out format rate", arrow("format_rate", ".0%"), span))
    cards.append(H.card("Mean response length", arrow("length_mean", ".0f") + " tokens", span))
    note = f"<p class='note'>{span}" + (f", {n:.0f} held-out problems" if n else "") + ".</p>"
    return f"<div class='cards'>{''.join(cards)}{H.mode_bars(stages)}</div>{note}"


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def accuracy_note(
    cfg: dict[str, Any], records: list[dict[str, Any]], stages: dict[str, dict[str, Any]]
) -> str:
    """Why training accuracy and held-out pass@1 differ, with this run's numbers and settings."""
    ro, ev = cfg.get("rollout", {}), cfg.get("eval", {})
    t_train, p_train = ro.get("temperature", 1.0), ro.get("top_p", 1.0)
    t_eval, p_eval = ev.get("temperature", 0.6), ev.get("top_p", 0.95)
    acc = _series(records, "accuracy")[1][-5:]
    after = list(stages.values())[-1].get("pass@1") if stages else None
    nums = ""
    if acc and after is not None:
        nums = f" Here: training accuracy {sum(acc) / len(acc):.2f} over the last {len(acc)} steps, held-out pass@1 {after:.3f}."
    return (
        "<p class='note'><b>Why training accuracy and held-out pass@1 differ.</b> Training accuracy is measured on "
        f"the samples GRPO learns from, drawn at temperature {t_train} (top-p {p_train}) so that a group's answers "
        f"differ; held-out pass@1 samples problems never trained on at temperature {t_eval}, top-p {p_eval} (the R1 "
        "evaluation protocol), which puts more of the probability on the model's most likely answer. A model "
        "that is usually right still samples more wrong tokens at the higher temperature, so training accuracy "
        f"sits below held-out pass@1 when both measure the same skill.{nums} Training accuracy well above "
        "held-out pass@1 would instead point to memorised training prompts.</p>"
    )


def doctor_section(records: list[dict[str, Any]], run_dir: Path) -> str:
    episodes = diagnose(records, run_doctor_config(run_dir))
    if not episodes:
        names = ", ".join(d.name.replace("_", " ") for d in DIAGNOSES)
        return f"<div class='ok'>No problems found. Checks run: {html.escape(names)}.</div>"
    return "".join(f"<div class='finding'>{html.escape(ep.line())}</div>" for ep in episodes)


def metric_tables(
    summary: dict[str, Any], stages: dict[str, dict[str, Any]], records: list[dict[str, Any]]
) -> str:
    parts = []
    if stages:
        names = list(stages)
        keys: list[str] = []
        for s in stages.values():
            keys.extend(
                k
                for k in s
                if k not in keys and isinstance(s[k], (int, float)) and not isinstance(s[k], bool)
            )
        keys.sort(key=lambda k: (k not in HEADLINE_ROWS, HEADLINE_ROWS.index(k) if k in HEADLINE_ROWS else 0))
        rows = []
        for k in keys:
            vals = [stages[n].get(k) for n in names]
            row = [(eval_label(k), k), *["—" if v is None else v for v in vals]]
            if len(names) > 1:
                a, b = vals[0], vals[-1]
                row.append(b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "—")
            rows.append(row)
        headers = ["held-out metric", *names] + (["change"] if len(names) > 1 else [])
        hl = {i for i, k in enumerate(keys) if k in HEADLINE_ROWS}
        parts += ["<h3>Held-out evaluations</h3>", H.table(headers, rows, hl),
                  "<p class='note'>— : not measured at that stage (e.g. the accuracy of a mode no sample used).</p>"]  # fmt: skip
    train = [r for r in records if any(not k.startswith("eval/") and k not in ("step", "time") for k in r)]
    keys = sorted({k for r in train for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and k not in ("step", "time")}, key=lambda k: (section(k), k))  # fmt: skip
    rows = []
    for k in keys:
        xs, ys = _series(train, k)
        if ys:
            rows.append(
                [(label(k), k), f"{ys[0]:.4g}", f"{ys[-1]:.4g}", f"{min(ys):.4g}", f"{max(ys):.4g}", len(ys)]
            )
    if rows:
        parts += [
            "<h3>Training metrics</h3>",
            H.table(["metric", "first", "last", "min", "max", "steps"], rows),
        ]
    return "".join(parts)


def _embedded(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most EMBED_LIMIT records, whole steps spread evenly over the run; long texts shortened."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_step.setdefault(int(r.get("step", 0)), []).append(r)
    steps = sorted(by_step)
    per = max(1, max((len(v) for v in by_step.values()), default=1))
    n_steps = max(1, EMBED_LIMIT // per)
    if len(steps) > n_steps:
        steps = (
            [steps[round(i * (len(steps) - 1) / (n_steps - 1))] for i in range(n_steps)]
            if n_steps > 1
            else steps[-1:]
        )
    out = []
    for s in dict.fromkeys(steps):
        for r in by_step[s][:EMBED_LIMIT]:
            r = dict(r)
            for k in ("prompt", "completion"):
                if isinstance(r.get(k), str) and len(r[k]) > EMBED_CHARS:
                    r[k] = (
                        r[k][:EMBED_CHARS] + " [... shortened in the report; full text in completions.jsonl]"
                    )
            out.append(r)
    return out[:EMBED_LIMIT]


def _samples(summary: dict[str, Any]) -> str:
    parts = []
    for stage, samples in summary.get("samples", {}).items():
        parts.append(f"<h3>{html.escape(stage)}</h3>")
        for s in samples:
            verdict = "right" if s.get("correct") else "wrong"
            parts.append(f"<p class='note'>{html.escape(str(s.get('question', '')))} — gold "
                         f"{html.escape(str(s.get('answer', '')))} — {verdict}</p>"
                         f"<pre>{html.escape(str(s.get('completion', '')))}</pre>")  # fmt: skip
    return "".join(parts)


def build_report(run_dir: str | Path) -> Path:
    """Write ``RUN/plots/*.png`` and ``RUN/report.html``; returns the HTML path."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    stages = _stages(summary, records)
    plots = plot_curves(records, run_dir / "plots")
    completions = read_completions(run_dir)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>thinkrl report</title>",
        f"<style>{H.CSS}</style></head><body>",
        f"<h1>{html.escape(summary.get('title', 'thinkrl run report'))}</h1>",
        f"<p class='note'>Run directory: {html.escape(str(run_dir))}. {len(records)} metric records.</p>",
    ]
    if summary.get("description"):
        parts.append(f"<p>{html.escape(summary['description'])}</p>")
    parts += ["<h2>Headline</h2>", headline(stages)]
    if summary.get("protocol"):
        parts.append(f"<p class='note'>{html.escape(summary['protocol'])}</p>")
    parts.append(accuracy_note(_run_config(run_dir), records, stages))
    if plots:
        parts.append("<h2>Training curves</h2><div class='grid'>")
        for key, path in plots.items():
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(key)}' src='data:image/png;base64,{data}' width='520'>")
        parts.append("</div>")
    parts += ["<h2>Run doctor</h2>", doctor_section(records, run_dir)]
    if summary.get("samples"):
        parts += ["<h2>Sample completions (held-out)</h2>", _samples(summary)]
    if completions:
        parts += [
            "<h2>Completions during training</h2>",
            H.completions_section(_embedded(completions), len(completions)),
        ]
    parts += ["<h2>All metrics</h2>", metric_tables(summary, stages, records)]
    if summary.get("notes"):
        parts += ["<h2>Notes</h2>", "".join(f"<p>{html.escape(n)}</p>" for n in summary["notes"])]
    parts += [H.PAGE_HEIGHT_JS, "</body></html>"]
    out = run_dir / "report.html"
    out.write_text("\n".join(parts))
    return out
