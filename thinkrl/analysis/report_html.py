"""HTML pieces of the run report: styles, tables, the mode-mix bar and the filterable completions table.

Everything is inline (no network, no external script): the page opens from a file anywhere. Text from the
model or the data is escaped (``html.escape``) or, in the completions table, inserted with ``textContent``
from JSON whose ``<`` are written as ``\\u003c``, so a completion that contains ``</script>`` or markup stays
text.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

CSS = """
body{font-family:system-ui,sans-serif;max-width:1120px;margin:2em auto;color:#111;padding:0 1em;line-height:1.45}
h1{margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}.key{color:#888;font-size:11px;font-family:monospace}
tr.hl td{background:#fff7d6;font-weight:600}.grid{display:flex;flex-wrap:wrap;gap:8px}
pre{background:#f6f6f6;padding:8px;white-space:pre-wrap;font-size:12px;border-radius:4px;margin:4px 0}
.note{color:#555;font-size:14px}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:1em 0}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 16px;min-width:200px;background:#fafafa}
.card .v{font-size:26px;font-weight:700}.card .s{color:#555;font-size:13px}
.bar{display:flex;height:18px;width:320px;border-radius:3px;overflow:hidden;margin:3px 0}
.bar div{height:100%}.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
.finding{border-left:4px solid #dc2626;background:#fef2f2;padding:6px 12px;margin:8px 0}
.ok{border-left:4px solid #16a34a;background:#f0fdf4;padding:6px 12px}
#ctl input,#ctl select{margin:0 10px 6px 4px}#ctbl td{vertical-align:top;text-align:left;font-size:13px}
#ctbl td.n{text-align:right}#ctbl details pre{max-width:620px}
"""

MODE_COLOURS = {"steps": "#2563eb", "direct": "#f59e0b", "malformed": "#9ca3af"}


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—"
        if v == int(v) and abs(v) >= 2:  # token and problem counts; shares (<= 1) keep their decimals
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 0.001 and v != 0 else f"{v:,.3f}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def table(headers: list[str], rows: list[list[Any]], highlight: set[int] | None = None) -> str:
    """A table; a cell that is a ``(text, raw_key)`` pair shows the key in small type after its label."""

    def cell(c: Any) -> str:
        if isinstance(c, tuple):
            return f"<td>{html.escape(c[0])} <span class='key'>{html.escape(c[1])}</span></td>"
        return f"<td>{html.escape(fmt(c))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        f"<tr{' class=hl' if highlight and i in highlight else ''}>" + "".join(cell(c) for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def mode_bars(stages: dict[str, dict[str, Any]]) -> str:
    """A stacked bar per stage of the share of samples in each mode (``mode/NAME`` keys); '' if none."""
    rows = []
    modes = [m for m in MODE_COLOURS if any(f"mode/{m}" in s for s in stages.values())]
    modes += sorted({k[5:] for s in stages.values() for k in s if k.startswith("mode/") and
                     not k.endswith("_accuracy") and k[5:] not in modes})  # fmt: skip
    if not modes:
        return ""
    for name, s in stages.items():
        parts = "".join(
            f"<div title='{html.escape(m)} {s.get(f'mode/{m}', 0):.0%}' style='width:{100 * s.get(f'mode/{m}', 0):.2f}%;"
            f"background:{MODE_COLOURS.get(m, '#a855f7')}'></div>"
            for m in modes
        )
        shares = ", ".join(f"{m} {s.get(f'mode/{m}', 0):.0%}" for m in modes)
        rows.append(
            f"<div class='s'>{html.escape(name)}: {html.escape(shares)}</div><div class='bar'>{parts}</div>"
        )
    legend = "".join(
        f"<span style='background:{MODE_COLOURS.get(m, '#a855f7')}'></span>{html.escape(m)}" for m in modes
    )
    return f"<div class='card'><div class='s'>Mode mix (held-out samples)</div>{''.join(rows)}<div class='legend s'>{legend}</div></div>"


def card(title: str, value: str, sub: str = "") -> str:
    return (f"<div class='card'><div class='s'>{html.escape(title)}</div><div class='v'>{html.escape(value)}</div>"
            f"<div class='s'>{html.escape(sub)}</div></div>")  # fmt: skip


def json_for_script(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<`` survives, so no ``</script>`` can close it."""
    return (
        json.dumps(data, ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


COMPLETIONS_JS = r"""
(function(){
const data = JSON.parse(document.getElementById('completions-data').textContent);
const $ = id => document.getElementById(id);
const PAGE = 20; let page = 0;
const steps = [...new Set(data.map(r => r.step))].sort((a, b) => a - b);
for (const id of ['smin', 'smax']) for (const s of steps) {
  const o = document.createElement('option'); o.value = s; o.textContent = s; $(id).appendChild(o); }
$('smax').value = steps.length ? steps[steps.length - 1] : '';
const params = new URLSearchParams(location.hash.slice(1));
for (const [k, v] of params) if ($(k)) $(k).value = v;
function keep(r) {
  const lo = +$('smin').value, hi = +$('smax').value, minr = $('rmin').value, c = $('corr').value,
        f = $('fin').value, q = $('q').value.toLowerCase();
  if (r.step < lo || r.step > hi) return false;
  if (minr !== '' && !(r.reward !== null && r.reward >= +minr)) return false;
  if (c !== 'all' && String(r.correct) !== c) return false;
  if (f !== 'all' && r.finish_reason !== f) return false;
  if (q && !((r.completion || '') + ' ' + (r.prompt || '')).toLowerCase().includes(q)) return false;
  return true; }
function td(text, cls) { const e = document.createElement('td'); e.textContent = text; if (cls) e.className = cls; return e; }
function num(v) { return v === null || v === undefined ? '—' : (Number.isInteger(v) ? String(v) : v.toFixed(3)); }
function render() {
  const rows = data.filter(keep), body = $('cbody'); body.replaceChildren();
  const pages = Math.max(1, Math.ceil(rows.length / PAGE)); page = Math.min(page, pages - 1);
  for (const r of rows.slice(page * PAGE, page * PAGE + PAGE)) {
    const tr = document.createElement('tr');
    tr.append(td(r.step, 'n'), td(r.group, 'n'), td(num(r.reward), 'n'),
      td(Object.entries(r.rewards || {}).map(([k, v]) => k + ' ' + num(v)).join(', ')),
      td(num(r.advantage), 'n'), td(r.correct === null ? '—' : (r.correct ? 'right' : 'wrong')),
      td(r.length, 'n'), td(r.finish_reason), td(r.policy_version, 'n'));
    const c = document.createElement('td'), d = document.createElement('details'),
          s = document.createElement('summary'), p = document.createElement('pre'), pp = document.createElement('pre');
    s.textContent = (r.completion || '').slice(0, 90) + ((r.completion || '').length > 90 ? ' …' : '');
    pp.textContent = 'prompt: ' + (r.prompt || '') + (r.answer != null ? '\ngold answer: ' + r.answer : '');
    p.textContent = r.completion || ''; d.append(s, pp, p); c.append(d); tr.append(c); body.append(tr); }
  $('ccount').textContent = rows.length + ' of ' + data.length + ' completions match; page ' + (page + 1) + ' of ' + pages;
  document.documentElement.dataset.completionsShown = String(Math.min(PAGE, rows.length - page * PAGE));
  document.documentElement.dataset.completionsMatch = String(rows.length); }
for (const id of ['smin', 'smax', 'rmin', 'corr', 'fin', 'q']) $(id).addEventListener('input', () => { page = 0; render(); });
$('prev').onclick = () => { page = Math.max(0, page - 1); render(); };
$('next').onclick = () => { page += 1; render(); };
render();
})();
"""

COMPLETIONS_CONTROLS = """
<div id='ctl' class='note'>steps <select id='smin'></select> to <select id='smax'></select>
reward at least <input id='rmin' type='number' step='0.1' style='width:5em'>
answer <select id='corr'><option value='all'>all</option><option value='true'>right</option>
<option value='false'>wrong</option></select>
finish <select id='fin'><option value='all'>all</option><option value='stop'>stop</option>
<option value='length'>cut at the cap</option></select>
text <input id='q' type='search' placeholder='search completions'>
<button id='prev'>&larr;</button><button id='next'>&rarr;</button> <span id='ccount'></span></div>
<table id='ctbl'><thead><tr><th>step</th><th>group</th><th>reward</th><th>per function</th><th>advantage</th>
<th>answer</th><th>tokens</th><th>finish</th><th>policy version</th><th>completion (click to open)</th></tr></thead>
<tbody id='cbody'></tbody></table>
"""


def completions_section(records: list[dict[str, Any]], total: int) -> str:
    """The filterable table over ``records`` (already capped); ``total`` is how many the run logged."""
    shown = (
        f"{len(records)} of the {total} logged completions"
        if len(records) < total
        else f"all {total} logged completions"
    )
    return (
        f"<p class='note'>What the model wrote during training ({shown}; from completions.jsonl). Filter by step, "
        "reward, right/wrong, finish reason or text; filters can be set in the address too, e.g. "
        "<code>report.html#corr=false&amp;smin=10</code>.</p>"
        + COMPLETIONS_CONTROLS
        + f"<script type='application/json' id='completions-data'>{json_for_script(records)}</script>"
        + f"<script>{COMPLETIONS_JS}</script>"
    )


PAGE_HEIGHT_JS = (
    "<script>addEventListener('load',()=>{document.documentElement.dataset.pageHeight="
    "String(Math.ceil(document.documentElement.scrollHeight))})</script>"
)
