"""`report RESULTS --html FILE`: one self-contained page a person understands in ten seconds.

No network at all: inline CSS, an inline SVG chart, a few lines of inline JavaScript for sorting
and filtering the audit table. Every value from the log is HTML-escaped (a job id or an error
text is data, never markup)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from html import escape
from itertools import pairwise
from pathlib import Path

from worker.budget.rate import Rate
from worker.files import write_atomically
from worker.results.records import windows
from worker.results.report import Report, exception_words, verification_line


def chart(page: Report, rate: Rate) -> str:
    """DELETEs per window as bars, the limit as a line, pauses of a window or more shaded.
    With several tenants each has its own windows and limit: a bar per window of each
    tenant (where they overlap, the busiest shows), never their sum against one limit."""
    w = rate.period
    every = windows(page.all_deletes(), w)  # the pauses: no tenant's DELETE at all
    if not every:
        return '<p class="muted">No DELETE was answered in this log.</p>'
    tenants = len(page.deletes) > 1
    labelled = (
        sorted(
            (start, n, who) for who, times in page.deletes.items() for start, n in windows(times, w)
        )
        if tenants
        else [(start, n, "") for start, n in every]
    )
    bins = [(start, n) for start, n, _ in labelled]
    limit = rate.limit or max(n for _, n in bins)
    top = max(limit, *(n for _, n in bins)) * 1.15
    width, height, left, bottom = 960, 260, 44, 28
    t0 = bins[0][0]
    t1 = max(page.all_deletes()) + w
    x_scale = (width - left - 10) / max(t1 - t0, w)

    def x(t: float) -> float:
        return left + (t - t0) * x_scale

    def y(n: float) -> float:
        return height - bottom - n / top * (height - bottom - 10)

    parts = [
        f'<svg id="timeline" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="DELETEs per {w:g} s window">'
    ]
    for (start, _), (nxt, _) in pairwise(every):
        if nxt - (start + w) >= w:  # a window or more with no DELETE answered
            parts.append(
                f'<rect class="pause" x="{x(start + w):.1f}" y="10" '
                f'width="{x(nxt) - x(start + w):.1f}" height="{height - bottom - 10}">'
                "<title>no DELETE answered: a cooldown, or waiting</title></rect>"
            )
    bar = max(2.0, w * x_scale - 2)
    for i, (start, n, who) in enumerate(labelled):
        when = datetime.fromtimestamp(start, UTC).strftime("%H:%M:%S")
        whose = f" of {escape(who or '(default)')}" if tenants else ""
        parts.append(
            f'<rect class="bar{" over" if rate.limit and n > rate.limit else ""}" '
            f'data-window="{i}" data-count="{n}" x="{x(start):.1f}" y="{y(n):.1f}" '
            f'width="{bar:.1f}" height="{y(0) - y(n):.1f}"><title>{when} UTC: {n} DELETEs'
            f"{whose}</title></rect>"
        )
    parts.append(
        f'<line id="limit-line" data-limit="{limit}" x1="{left}" x2="{width - 10}" '
        f'y1="{y(limit):.1f}" y2="{y(limit):.1f}"/>'
        f'<text class="axis" x="{width - 12}" y="{y(limit) - 4:.1f}" text-anchor="end">'
        f"limit {limit} per {w:g} s</text>"
        f'<line class="axis-line" x1="{left}" x2="{width - 10}" y1="{y(0)}" y2="{y(0)}"/>'
        f'<text class="axis" x="{left - 6}" y="{y(0):.1f}" text-anchor="end">0</text>'
        f'<text class="axis" x="{left - 6}" y="{y(limit) + 4:.1f}" text-anchor="end">{limit}</text>'
        f'<text class="axis" x="{left}" y="{height - 8}">'
        f"{datetime.fromtimestamp(t0, UTC):%Y-%m-%d %H:%M:%S} UTC</text>"
        f'<text class="axis" x="{width - 10}" y="{height - 8}" text-anchor="end">'
        f"{datetime.fromtimestamp(t1, UTC):%H:%M:%S} UTC</text></svg>"
    )
    return "".join(parts)


CSS = """
:root{--ink:#1d2330;--muted:#667085;--line:#e4e7ec;--ok:#12b76a;--bad:#d92d20;--warn:#f79009;
--bar:#2e90fa}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
color:var(--ink);margin:0;background:#f8f9fb}main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 10px}.muted{color:var(--muted)}
.verdict{font-size:18px;margin:14px 0 18px;padding:12px 16px;border-radius:8px;background:#fff;
border-left:6px solid var(--ok)}.verdict.bad{border-color:var(--bad)}
.proof{margin:8px 0;padding:8px 12px;border-left:6px solid var(--muted);font-size:13px;
background:#fff;border-radius:8px}.proof.ok{border-color:var(--ok)}
.proof.bad{border-color:var(--bad)}.proof div{overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card b{display:block;font-size:24px}.card.bad b{color:var(--bad)}.card.ok b{color:var(--ok)}
.card.warn b{color:var(--warn)}
svg{width:100%;height:auto;background:#fff;border:1px solid var(--line);border-radius:8px}
.bar{fill:var(--bar)}.bar.over{fill:var(--bad)}.pause{fill:#fef0c7}
#limit-line{stroke:var(--bad);stroke-width:2;stroke-dasharray:6 4}.axis{font-size:11px;
fill:var(--muted)}.axis-line{stroke:var(--line)}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line)}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#f2f4f7;cursor:pointer;user-select:none;white-space:nowrap}
th[data-dir=asc]::after{content:" ▲"}th[data-dir=desc]::after{content:" ▼"}
td.o-disconnected,td.o-deleted{color:#067647}td.o-failed,td.o-invalid{color:var(--bad)}
td.o-already_gone{color:var(--muted)}td.t{white-space:nowrap}
input{padding:6px 8px;width:320px;margin:0 8px 8px 0;border:1px solid var(--line);
border-radius:6px}code{font-size:12px}
"""

JS = """
(function(){
  var table=document.getElementById('audit');if(!table)return;
  var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
  var filter=document.getElementById('filter'),shown=document.getElementById('shown');
  function apply(){
    var q=filter.value.toLowerCase(),n=0;
    rows.forEach(function(r){var hit=!q||r.textContent.toLowerCase().indexOf(q)>=0;
      r.hidden=!hit;if(hit)n++;});
    shown.textContent=n+' of '+rows.length+' rows';
  }
  filter.addEventListener('input',apply);
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
    th.addEventListener('click',function(){
      var dir=th.getAttribute('data-dir')==='asc'?'desc':'asc';
      Array.prototype.forEach.call(table.tHead.rows[0].cells,function(c){c.removeAttribute('data-dir');});
      th.setAttribute('data-dir',dir);
      rows.sort(function(a,b){var x=a.cells[i].textContent,y=b.cells[i].textContent;
        var nx=parseFloat(x),ny=parseFloat(y);
        var c=(!isNaN(nx)&&!isNaN(ny)&&String(nx)===x&&String(ny)===y)?nx-ny:x.localeCompare(y);
        return dir==='asc'?c:-c;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
  apply();
  document.body.setAttribute('data-ready','1');
})();
"""


# Only the page's own inline style and its one script (by hash) may run: a value from the
# log that slipped through escaping could still load or run nothing.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()}'; "
    "base-uri 'none'; form-action 'none'"
)


def _proof(page: Report) -> str:
    """Chain status and `verify`'s latest findings: what an auditor asks first."""
    e = escape
    chain = page.chain
    lines = chain.lines()
    status = "ok" if chain.intact else "bad"
    out = [
        f'<div class="proof {status}" id="chain"><b>Hash chain: '
        f"{'intact' if chain.intact else 'BROKEN'}</b>",
        *(f"<div>{e(line)}</div>" for line in lines),
        "</div>",
    ]
    verified = page.verification()
    if verified is None:
        out.append(
            '<div class="proof" id="verification"><b>Not verified</b><div>No <code>verify</code> '
            "has checked this log's accounts yet: <code>xquik-disconnect verify RESULTS</code>"
            "</div></div>"
        )
        return "".join(out)
    ok = not verified["exceptions"]
    out.append(
        f'<div class="proof {"ok" if ok else "bad"}" id="verification">'
        f"<b>{e(verification_line(verified))}</b>"
    )
    for item in verified["exceptions"][:200]:
        out.append(f"<div class=exception>{e(exception_words(item))}</div>")
    out.append("</div>")
    return "".join(out)


def render(page: Report, *, source: str, rate: Rate) -> str:
    e = escape
    failed = page.outstanding()
    outstanding = sum(len(v) for v in failed.values())
    gone = page.outcomes.get("already_gone", 0)
    disconnected = page.outcomes.get("disconnected", 0)
    bad = outstanding or page.invalid
    verdict = (
        f"{len(page.done):,} accounts done: {disconnected:,} disconnected, {gone:,} already gone"
        + (f"; {outstanding:,} failed and not done since" if outstanding else "")
        + (f"; {len(page.invalid):,} invalid lines" if page.invalid else "")
        + "."
    )
    runs = sorted(page.runs.values(), key=lambda r: r.first)
    first = runs[0].first_ts if runs else ""
    last = max(runs, key=lambda r: r.last).last_ts if runs else ""
    cards = [
        ("ok", "accounts done", len(page.done)),
        ("", "disconnected", disconnected),
        ("", "already gone", gone),
        ("bad" if outstanding else "", "failed, outstanding", outstanding),
        ("bad" if page.invalid else "", "invalid lines", len(page.invalid)),
        ("warn" if page.not_connected else "", "not connected at start", len(page.not_connected)),
        ("", "monitors deleted", page.monitors.get("deleted", 0)),
        ("", "runs", len(page.runs)),
    ]
    html = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>Offboarding report: {e(source)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>Offboarding report</h1><div class=muted><code>{e(source)}</code> · "
        f"{page.records:,} records · {e(first)} → {e(last)} · key "
        f"{e(', '.join(sorted(page.key_ids)) or 'unknown')}</div>",
        f'<div class="verdict{" bad" if bad else ""}" id="verdict">{e(verdict)}</div>',
        _proof(page),
        '<div class="cards">',
        *(
            f'<div class="card {cls}" data-card="{e(label)}"><b>{n:,}</b>{e(label)}</div>'
            for cls, label, n in cards
        ),
        "</div>",
        f"<h2>DELETEs per {rate.period:g} s window"
        + (" of each tenant" if len(page.deletes) > 1 else "")
        + "</h2>",
        '<p class="muted">Each bar is one of the server\'s fixed windows (opened by the first '
        "DELETE after the last one ended); the dashed line is the limit "
        f"({e(str(rate))}, report --rate); shaded: a window or more with no DELETE answered "
        "(a cooldown, or waiting).</p>",
        chart(page, rate),
    ]
    if any(page.tenants):
        html.append(
            "<h2>By tenant</h2><p class=muted>Several keys (--keys): each tenant has its own "
            "budget, and its own windows in the chart above.</p><table id=tenants><thead><tr>"
            "<th>tenant</th><th>disconnected</th><th>already gone</th><th>failed</th>"
            "<th>other</th></tr></thead><tbody>"
        )
        for name, per in sorted(page.tenants.items()):
            main = ("disconnected", "already_gone", "failed")
            other = sum(n for k, n in per.items() if k not in main)
            cells = "".join(f"<td>{per.get(k, 0):,}</td>" for k in main)
            html.append(f"<tr><td>{e(name or '(default key)')}</td>{cells}<td>{other:,}</td></tr>")
        html.append("</tbody></table>")
    if failed:
        html.append(
            "<h2>Failed, not done since</h2><table id=failures><thead><tr><th>error</th>"
            "<th>accounts</th><th>ids</th></tr></thead><tbody>"
        )
        for error, accounts in failed.items():
            ids = ", ".join(accounts[:50]) + (" …" if len(accounts) > 50 else "")
            html.append(f"<tr><td>{e(error)}</td><td>{len(accounts)}</td><td>{e(ids)}</td></tr>")
        html.append("</tbody></table>")
    if page.not_connected:
        ids = ", ".join(page.not_connected[:100])
        html.append(
            f"<h2>Not connected when the run began: {len(page.not_connected)}</h2>"
            f'<p class="muted">Already removed, or a mistyped id (the real account may still be '
            f"connected): {e(ids)}</p>"
        )
    if page.invalid:
        html.append(
            "<h2>Invalid lines</h2><table id=invalid><thead><tr><th>line</th>"
            "<th>error</th></tr></thead><tbody>"
        )
        for src, error in page.invalid[:500]:
            html.append(f"<tr><td>{e(src)}</td><td>{e(error)}</td></tr>")
        html.append("</tbody></table>")
    html.append(
        "<h2>Audit: every account, who it was, what happened</h2>"
        '<input id=filter type=search placeholder="filter: an id, a user, an outcome…">'
        "<span id=shown class=muted></span>"
    )
    if page.rows_total > len(page.rows):
        html.append(
            f'<p class="muted">The first {len(page.rows):,} of {page.rows_total:,} records; '
            "the result log has them all.</p>"
        )
    html.append(
        "<table id=audit><thead><tr><th>time (UTC)</th><th>account</th><th>X user</th>"
        "<th>X user id</th><th>outcome</th><th>error</th><th>run</th><th>key_id</th></tr>"
        "</thead><tbody>"
    )
    for r in page.rows:
        outcome = str(r.get("outcome"))
        user = r.get("x_username") or r.get("username") or ""
        when = str(r.get("ts", "")).replace("T", " ").rstrip("Z")
        html.append(
            f"<tr><td class=t>{e(when)}</td><td>{e(str(r.get('account_id') or ''))}</td>"
            f"<td>{e(str(user))}</td><td>{e(str(r.get('x_user_id') or ''))}</td>"
            f'<td class="o-{e(outcome)}">{e(outcome)}</td><td>{e(str(r.get("error") or ""))}</td>'
            f"<td>{e(str(r.get('run_id')))}</td><td>{e(str(r.get('key_id') or ''))}</td></tr>"
        )
    html.append(f"</tbody></table></main><script>{JS}</script></body></html>")
    return "".join(html)


def write(report: Report, out: Path, *, rate: Rate, label: str) -> None:
    write_atomically(out, render(report, source=label, rate=rate).encode())
