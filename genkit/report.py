"""``genkit report RUN``: one self-contained HTML page about a run (docs/report.md).

Everything is read from the run folder through ``genkit.Run`` and inlined: images and sounds as ``data:`` URIs,
curves as SVG drawn here (no plotting library, no script, nothing fetched from the network). Snapshots are embedded
by file extension (png/jpg/gif/webp/svg -> ``<img>``, wav/mp3/ogg/flac -> ``<audio>``, txt -> ``<pre>``), so a
third-party domain's snapshots get a report too.

Importing this module imports no torch; the provenance digest (safetensors) and a conditional run's per-class
samples (the generator is loaded) do, when the page is written.
"""

from __future__ import annotations

import base64
import html
import math
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import GenkitError
from .run import Run

MARKER = '<meta name="generator" content="genkit report">'
REPORT = "report.html"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp", ".svg": "image/svg+xml"}
AUDIO_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".flac": "audio/flac"}
TEXT_TYPES = {".txt", ".text", ".md"}
SNAPSHOT = re.compile(r"^(step-(\d+)|final)$")
TEXT_LINES = 200  # lines of a text sample file shown (the rest is counted)
PER_CLASS = 4  # samples per class in a conditional run's per-class rows
# curves drawn together (one chart); every other numeric key of metrics.jsonl gets its own chart
CHART_GROUPS = (("losses", "Losses", ("loss_d", "loss_g")), ("d-outputs", "D(real) / D(fake)", ("d_real", "d_fake")),
                ("penalty", "Penalty", ("penalty",)))
NOT_CURVES = {"step", "seconds", "phase", "epoch"}
COLOURS = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2")
# a metric's real-data reference under another name than KEY_real / real_KEY
REFERENCE_ALIASES = {"self_bleu4_at_real_n": "real_self_bleu4_method1"}
REFERENCE_ONLY = {"refnet_accuracy"}  # describe the real data (the reference classifier's accuracy on it)
BASELINE = re.compile(r"^mle_t([0-9.]+)_(.+)$")  # the text domain's MLE baseline at temperature t


def write_report(run_path: Path | str, out: Path | str | None = None, per_class: int = PER_CLASS,
                 device: str = "cpu") -> Path:
    """Write the HTML report of the run at ``run_path`` to ``out`` (default ``RUN/report.html``); return its path.

    A file at ``out`` is replaced only when it is an earlier genkit report: a user's other file is never
    overwritten. A conditional run gets ``per_class`` samples of each class from its latest checkpoint.
    """
    run = Run.open(run_path)
    target = Path(out) if out is not None else run.root / REPORT
    if target.is_dir():
        raise GenkitError(f"--out {target} is a folder; give a file name such as {target / REPORT}")
    if target.exists() and not _is_report(target):
        raise GenkitError(f"--out {target} exists and is not a genkit report; genkit does not overwrite it")
    if not target.parent.is_dir():
        raise GenkitError(f"--out {target}: no such folder {target.parent}")
    page = render(run, per_class=per_class, device=device)
    from .files import atomic_write_text

    atomic_write_text(target, page)
    return target


def _is_report(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return MARKER in f.read(4096)
    except OSError:
        return False


# -- reading the run ---------------------------------------------------------------------------------------------
def _step_of(ckpt: Path | None) -> int | None:
    m = re.search(r"step-(\d+)$", ckpt.name) if ckpt is not None else None
    return int(m.group(1)) if m else None


def snapshots(run: Run) -> dict[str, list[Path]]:
    """The run's snapshots, ``{"step-00000500": [files...], ..., "final": [...]}`` in step order (final last).

    A snapshot named N is every file ``samples/N.*`` and the files of the folder ``samples/N/`` (audio: the WAVs,
    with the spectrogram grid ``N.png`` beside the folder)."""
    root = run.samples_dir
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        return found
    for entry in root.iterdir():
        name = entry.name if entry.is_dir() else entry.name.split(".", 1)[0]
        if entry.name.startswith(".") or entry.suffix == ".json" or not SNAPSHOT.match(name):
            continue  # hidden files and JSON sidecars (a snapshot's provenance record) are not samples
        files = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix != ".json" and not p.name.startswith(".")) \
            if entry.is_dir() else [entry]
        found.setdefault(name, []).extend(files)
    order = sorted(found, key=lambda n: (n == "final", int(SNAPSHOT.match(n).group(2) or 0)))  # type: ignore[union-attr]
    return {n: _ordered(found[n]) for n in order}


def _ordered(files: Iterable[Path]) -> list[Path]:
    """Images first (a grid or the spectrograms), then sounds, then text; by name within each."""
    def rank(p: Path) -> tuple[int, str]:
        ext = p.suffix.lower()
        return (0 if ext in IMAGE_TYPES else 1 if ext in AUDIO_TYPES else 2 if ext in TEXT_TYPES else 3, p.name)

    return sorted(files, key=rank)


def _reference(key: str, keys: Iterable[str]) -> str | None:
    """The real-data reference of metric ``key`` among ``keys``: an alias, else ``KEY_real`` or ``real_KEY`` unless
    an alias claims that name for another metric."""
    keys = set(keys)
    if REFERENCE_ALIASES.get(key) in keys:
        return REFERENCE_ALIASES[key]
    claimed = {ref for k, ref in REFERENCE_ALIASES.items() if k in keys}
    return next((r for r in (f"{key}_real", f"real_{key}") if r in keys and r != key and r not in claimed), None)


def evaluation_rows(metrics: dict[str, Any]) -> tuple[list[tuple[str, Any, Any, dict[str, Any]]], list[str]]:
    """``(rows, baselines)``: one row ``(key, value, real-data reference, {baseline: value})`` per metric.

    The reference of ``K`` is ``K_real`` or ``real_K`` (or an alias); those keys are not rows of their own.
    Baselines are the text domain's ``mle_t<T>_K`` (the MLE model at temperature T)."""
    base: dict[str, dict[str, Any]] = {}
    plain: dict[str, Any] = {}
    for key, value in metrics.items():
        m = BASELINE.match(key)
        if m:
            base.setdefault(m.group(2), {})[f"MLE t={m.group(1)}"] = value
        else:
            plain[key] = value
    refs = {k: ref for k in plain if (ref := _reference(k, plain)) is not None}
    used = set(refs.values())
    baselines = sorted({b for row in base.values() for b in row}, key=lambda b: float(b.split("=")[1]))
    rows = []
    for key, value in plain.items():
        if key in used and key not in refs:
            continue
        if key in REFERENCE_ONLY:
            rows.append((key, None, value, base.get(key, {})))
        else:
            rows.append((key, value, plain.get(refs.get(key, "")), base.get(key, {})))
    for key, row in base.items():  # a baseline metric the adversarial run did not report
        if key not in plain:
            rows.append((key, None, None, row))
    return rows, baselines


# -- HTML pieces -------------------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"
    return _e(value)


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _png_size(path: Path) -> tuple[int, int] | None:
    head = path.read_bytes()[:24] if path.suffix.lower() == ".png" else b""
    if len(head) == 24 and head[:8] == b"\x89PNG\r\n\x1a\n":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return None


def _display_width(path: Path, target: int = 480, max_height: int = 760) -> str:
    """A CSS width for an image: small grids of small samples are enlarged (whole multiples, pixels stay sharp)
    toward ``target`` px, a tall one is kept under ``max_height`` px; CSS caps it at the column's width."""
    size = _png_size(path)
    if not size or not all(size):
        return ""
    w, h = size
    factor = max(1, min(4, round(target / w)))
    width = min(w * factor, w * max_height / h) if h * factor > max_height else w * factor
    return f' style="width:{max(width, 1):.0f}px"'


def embed_files(files: Sequence[Path], label: str, captions: bool = True, target: int = 480,
                max_height: int = 760) -> str:
    """The HTML of a group of sample files, by extension; unknown kinds are listed by name."""
    parts, players, other = [], [], []
    for f in files:
        ext = f.suffix.lower()
        if ext in IMAGE_TYPES:
            parts.append(f'<figure class="sample-image"><img src="{_data_uri(f, IMAGE_TYPES[ext])}" '
                         f'alt="{_e(label)}: {_e(f.name)}"{_display_width(f, target, max_height)}>' +
                         (f'<figcaption>{_e(f.name)}</figcaption>' if captions else "") + '</figure>')
        elif ext in AUDIO_TYPES:
            players.append(f'<li class="clip"><span>{_e(f.stem)}</span><audio controls preload="metadata" '
                           f'src="{_data_uri(f, AUDIO_TYPES[ext])}" title="{_e(f.name)}"></audio></li>')
        elif ext in TEXT_TYPES:
            lines = f.read_text(encoding="utf-8", errors="replace").splitlines()
            more = f"\n… {len(lines) - TEXT_LINES} more lines in {f.name}" if len(lines) > TEXT_LINES else ""
            parts.append(f'<figure class="sample-text"><pre>{_e(chr(10).join(lines[:TEXT_LINES]) + more)}</pre>' +
                         (f'<figcaption>{_e(f.name)} ({len(lines)} lines)</figcaption>' if captions else "") +
                         '</figure>')
        else:
            other.append(f.name)
    if players:
        parts.append(f'<ul class="clips">{"".join(players)}</ul>')
    if other:
        parts.append(f'<p class="note">Not shown: {_e(", ".join(other))}</p>')
    return "".join(parts) or '<p class="note">No files.</p>'


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        lo, hi = lo - (abs(lo) or 1) * 0.5, hi + (abs(hi) or 1) * 0.5
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 0.5:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.1e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:.6g}"


def svg_chart(chart_id: str, title: str, series: list[tuple[str, list[tuple[float, float]], bool]]) -> str:
    """A line chart as inline SVG: ``series`` of ``(name, [(step, value)...], dashed)``; axes, ticks, a legend."""
    W, H, L, R, T, B = 360, 220, 52, 10, 14, 40
    pts = [p for _, s, _ in series for p in s]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xt, yt = _nice_ticks(min(xs), max(xs)), _nice_ticks(min(ys), max(ys))
    xt = [x for x in xt if float(x).is_integer()] or xt  # steps are whole numbers
    x0, x1 = min(xt[0], min(xs)), max(xt[-1], max(xs))
    y0, y1 = min(yt[0], min(ys)), max(yt[-1], max(ys))
    sx = lambda x: L + (x - x0) / ((x1 - x0) or 1) * (W - L - R)
    sy = lambda y: H - B - (y - y0) / ((y1 - y0) or 1) * (H - T - B)
    out = [f'<svg class="chart" id="chart-{_e(chart_id)}" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="{_e(title)} against step">']
    for y in yt:
        out.append(f'<line class="grid" x1="{L}" x2="{W - R}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>'
                   f'<text class="tick" x="{L - 4}" y="{sy(y) + 3.5:.1f}" text-anchor="end">{_e(_tick(y))}</text>')
    for x in xt:
        out.append(f'<line class="tickmark" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{H - B}" y2="{H - B + 4}"/>'
                   f'<text class="tick" x="{sx(x):.1f}" y="{H - B + 15}" text-anchor="middle">{_e(_tick(x))}</text>')
    out.append(f'<line class="axis" x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}"/>'
               f'<line class="axis" x1="{L}" x2="{L}" y1="{T}" y2="{H - B}"/>'
               f'<text class="label" x="{(L + W - R) / 2}" y="{H - 4}" text-anchor="middle">step</text>')
    for i, (name, s, dashed) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        out.append(f'<polyline class="series" data-key="{_e(name)}" points="{coords}" stroke="{colour}"{dash}/>')
        if len(s) == 1:
            out.append(f'<circle cx="{sx(s[0][0]):.1f}" cy="{sy(s[0][1]):.1f}" r="3" fill="{colour}"/>')
        out.append(f'<title>{_e(name)}</title>')
    out.append("</svg>")
    legend = "".join(f'<li><i style="border-color:{COLOURS[i % len(COLOURS)]}"'
                     f'{" class=dashed" if d else ""}></i>{_e(n)}</li>' for i, (n, _, d) in enumerate(series))
    return (f'<figure class="chart-box" data-chart="{_e(chart_id)}"><figcaption>{_e(title)}</figcaption>'
            f'{"".join(out)}<ul class="legend">{legend}</ul></figure>')


def curves(records: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The charts of metrics.jsonl (training records; pre-training ``phase`` lines are left out), and the keys
    charted. A quantity logged at fewer than two steps is not a curve (it is in the evaluation table)."""
    points: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if "phase" in r or not isinstance(r.get("step"), (int, float)):
            continue
        for k, v in r.items():
            if k in NOT_CURVES or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            points.setdefault(k, []).append((float(r["step"]), float(v)))
    charts, charted = [], []
    grouped = {k for _, _, group in CHART_GROUPS for k in group}
    for chart_id, title, group in CHART_GROUPS:
        series = [(k, points[k], False) for k in group if len(points.get(k, [])) >= 2]
        if series:
            charts.append(svg_chart(chart_id, title, series))
            charted += [s[0] for s in series]
    refs_of = {k: ref for k in points if (ref := _reference(k, points)) is not None}
    as_ref = set(refs_of.values())
    keys = [k for k in points if k not in grouped and k not in as_ref and len(points[k]) >= 2 and not BASELINE.match(k)]
    families: dict[str, list[str]] = {}  # bleu2, bleu3, ... (names that differ in one number): one chart
    for key in keys:
        families.setdefault(key if key in refs_of else re.sub(r"\d+", "#", key), []).append(key)
    for family in families.values():
        series = [(k, points[k], False) for k in family]
        if len(family) == 1 and family[0] in refs_of:
            series.append((f"{refs_of[family[0]]} (real data)", points[refs_of[family[0]]], True))
        title = family[0] if len(family) == 1 else _family_title(family)
        charts.append(svg_chart(re.sub(r"[^A-Za-z0-9_-]", "-", family[0]), title, series))
        charted += family
    return charts, charted


def _family_title(keys: list[str]) -> str:
    """``bleu{2,3,4,5}_method1`` for ``bleu2_method1`` ... ``bleu5_method1``."""
    parts = [re.split(r"(\d+)", k) for k in keys]
    return "".join(p if len({q[i] for q in parts}) == 1 else "{" + ",".join(q[i] for q in parts) + "}"
                   for i, p in enumerate(parts[0]))


def _table(rows: Iterable[tuple[str, Any]], cls: str = "facts") -> str:
    return f'<table class="{cls}">' + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def evaluation_table(metrics: dict[str, Any], best: dict[str, Any] | None) -> str:
    rows, baselines = evaluation_rows(metrics)
    has_ref = any(r[2] is not None for r in rows)
    head = "<tr><th>metric</th><th>this run</th>" + ("<th>real data</th>" if has_ref else "") + \
        "".join(f"<th>{_e(b)}</th>" for b in baselines) + "</tr>"
    body = []
    best_key = (best or {}).get("metric")
    for key, value, ref, base in rows:
        mark = ' class="best-metric" title="the metric that chooses checkpoints/best"' if key == best_key else ""
        body.append(f"<tr{mark}><th>{_e(key)}</th><td>{_num(value)}</td>" +
                    (f"<td>{_num(ref)}</td>" if has_ref else "") +
                    "".join(f"<td>{_num(base.get(b))}</td>" for b in baselines) + "</tr>")
    return f'<div class="scroll"><table class="metrics" id="evaluation"><thead>{head}</thead>' \
           f'<tbody>{"".join(body)}</tbody></table></div>'


# -- conditional runs --------------------------------------------------------------------------------------------
def class_rows(run: Run, meta: dict[str, Any], per_class: int, device: str) -> str:
    """One table row per class: ``per_class`` samples of it from the latest checkpoint, written with the domain's
    own ``write_snapshot`` (an image grid, WAVs and their spectrograms, a text file) and embedded."""
    import torch

    num = int(meta.get("num_classes") or 0)
    names = list(meta.get("class_names") or [])
    loaded = run.load(device=device)
    domain, options = run.domain, run.config.options
    rows = []
    with tempfile.TemporaryDirectory(prefix="genkit-report-") as tmp, torch.no_grad(), \
            torch.random.fork_rng(devices=[]):
        for c in range(num):
            torch.manual_seed(c)
            rng = torch.Generator(device=loaded.device).manual_seed(c)
            z = domain.sample_latent(per_class, options, rng=rng, device=loaded.device)
            cond = torch.full((per_class,), c, dtype=torch.long, device=loaded.device)
            samples = domain.generate(loaded.generator, z, cond, options)
            samples = samples.cpu() if torch.is_tensor(samples) else samples
            files = domain.write_snapshot(samples, cond.cpu(), Path(tmp) / f"class-{c:03d}", options, loaded.data)
            name = names[c] if c < len(names) else str(c)
            rows.append(f'<tr class="class-row" data-class="{c}"><th>{_e(name)}<small>class {c}</small></th>'
                        f'<td class="samples">{embed_files(_ordered(files), f"class {name}", False, 200, 280)}</td></tr>')
    return (f'<p class="note">{per_class} samples per class from {_e(loaded.checkpoint.name)} '
            f'({_e(loaded.weights.name)}), seed = class index.</p>'
            f'<div class="scroll"><table class="classes" id="classes"><tbody>{"".join(rows)}</tbody></table></div>')


# -- the page ----------------------------------------------------------------------------------------------------
def render(run: Run, per_class: int = PER_CLASS, device: str = "cpu") -> str:
    from .config import read_toml

    config_text = run.config_path.read_text(encoding="utf-8")
    config = read_toml(run.config_path)
    domain_name = str(config.get("domain", "?"))
    summary = run.read_summary()
    records = run.metrics()
    meta = run.read_data_meta(required=False)
    latest = run.latest_checkpoint()
    try:
        best_ckpt = run.best_checkpoint()
    except GenkitError as exc:
        best_ckpt, best_problem = None, str(exc)
    else:
        best_problem = ""
    run_id = str(getattr(run, "run_id", run.root.name))
    snaps = snapshots(run)
    final_step = summary.get("steps", _step_of(latest))

    sections: list[tuple[str, str, str]] = []  # (id, title, html)

    facts = [("domain", _e(domain_name)), ("status", _e(summary.get("status", "no summary.json (in progress?)"))),
             ("steps", _num(summary.get("steps", _step_of(latest)))),
             ("data", _e(summary.get("data_source") or meta.get("source") or config.get("data", ""))),
             ("loss", _e(summary.get("loss", config.get("train", {}).get("loss", "")))),
             ("device", _e(summary.get("device", "–"))),
             ("training time", _e(f"{summary['seconds']:.1f} s") if isinstance(summary.get("seconds"), (int, float))
              else "–")]
    params = summary.get("parameters") or {}
    if params:
        facts.append(("parameters", _e(", ".join(f"{k} {v:,}" for k, v in params.items()))))
    if meta.get("conditional"):
        facts.append(("classes", _e(f"{meta.get('num_classes', 0)}: {', '.join(meta.get('class_names') or [])}")))
    sections.append(("overview", "Overview", _table(facts)))
    sections.append(("config", "Config", f'<p class="note">{_e(run.config_path.name)}: reproduce with '
                     f'<code>genkit run {_e(domain_name)} --config {_e(run.config_path)} --out NEW</code></p>'
                     f'<pre class="config" id="config-toml">{_e(config_text)}</pre>'))

    charts, _ = curves(records)
    sections.append(("curves", "Curves", f'<div class="charts">{"".join(charts)}</div>' if charts else
                     '<p class="note">Fewer than two logged steps: no curves to draw.</p>'))

    # snapshots: the latest, and the best checkpoint's
    snap_html = []
    if snaps:
        last = next(reversed(snaps))
        label = f"final (step {final_step})" if last == "final" else last
        snap_html.append(f'<section class="snapshot" id="snapshot-latest"><h3>Latest: {_e(label)}</h3>'
                         f'{embed_files(snaps[last], label)}</section>')
        best_step = _step_of(best_ckpt)
        if best_ckpt is None:
            why = best_problem or "no checkpoints/best (the domain defines no best_metric, or no evaluation ran)"
            snap_html.append(f'<p class="note">Best: {_e(why)}.</p>')
        else:
            name = f"step-{best_step:08d}" if best_step is not None else ""
            if name not in snaps and best_step == final_step and "final" in snaps:
                name = "final"
            if name == last:
                snap_html.append(f'<p class="note">Best ({_e(best_ckpt.name)}) is the latest snapshot above.</p>')
            elif name in snaps:
                snap_html.append(f'<section class="snapshot" id="snapshot-best"><h3>Best: {_e(best_ckpt.name)}</h3>'
                                 f'{embed_files(snaps[name], name)}</section>')
            else:
                snap_html.append(f'<p class="note">Best: {_e(best_ckpt.name)} has no snapshot (no samples/step-'
                                 f'{best_step:08d}: --sample-every did not fall on it); '
                                 f'<code>genkit sample {_e(run.root)} --best</code> writes samples of it.</p>')
        older = [n for n in snaps if n != last]
        if older:
            snap_html.append(f'<p class="note">Other snapshots in {_e(run.samples_dir)}: {_e(", ".join(older))}</p>')
    else:
        snap_html.append(f'<p class="note">No snapshots in {_e(run.samples_dir)}.</p>')
    sections.append(("samples", "Samples", f'<div class="snapshots">{"".join(snap_html)}</div>'))

    metrics = summary.get("metrics") or {}
    if not metrics:  # a run without summary.json: its last evaluation
        for r in reversed(records):
            extra = {k: v for k, v in r.items() if k not in NOT_CURVES | {"loss_d", "loss_g", "d_real", "d_fake", "penalty"}}
            if extra and "phase" not in r:
                metrics = extra
                break
    best = summary.get("best") if isinstance(summary.get("best"), dict) else None
    if metrics:
        note = f'<p class="note">Best: {_e(best["metric"])} = {_num(best.get("value"))} at step {_num(best.get("step"))}.</p>' \
            if best and best.get("metric") else ""
        sections.append(("evaluation", "Evaluation", evaluation_table(metrics, best) + note))
    else:
        sections.append(("evaluation", "Evaluation", '<p class="note">No evaluation in this run.</p>'))

    phases = [r for r in records if "phase" in r]
    if phases:
        shown = set(metrics)  # the MLE baseline's sweep is already in the evaluation table
        rows = "".join(_table([(k, _num(v)) for k, v in r.items() if k != "step" and not (BASELINE.match(k) and k in shown)],
                              "facts phase") for r in phases)
        sections.append(("pretraining", "Pre-training", rows))

    if meta.get("conditional") and int(meta.get("num_classes") or 0) > 0:
        if latest is None:
            body = '<p class="note">No checkpoint: no per-class samples.</p>'
        elif config.get("train", {}).get("condition"):
            body = '<p class="note">A cross-modal run: its generator is conditioned on another domain, not on classes.</p>'
        else:
            try:
                body = class_rows(run, meta, per_class, device)
            except Exception as exc:  # the page is still worth having; say why this part is missing
                body = f'<p class="note">Could not generate per-class samples: {_e(type(exc).__name__)}: {_e(exc)}</p>'
        sections.append(("classes", "Per class", body))

    prov = [("generated by", f"genkit {_e(__version__)} (<code>genkit report</code>)"),
            ("generated at", _e(time.strftime("%Y-%m-%d %H:%M:%S %z"))),
            ("domain", _e(domain_name)), ("run id", _e(run_id)), ("run folder", _e(run.root.resolve())),
            ("trained with", _e(f"genkit {summary['genkit_version']}") if summary.get("genkit_version") else "–")]
    for label, ckpt in (("latest", latest), ("best", best_ckpt)):
        if ckpt is None or (label == "best" and latest is not None and ckpt.resolve() == latest.resolve()):
            continue
        from .checkpoint import file_digest

        weights = Run.generator_weights(ckpt)
        try:
            digest = file_digest(weights)
        except GenkitError as exc:
            digest = f"unreadable: {exc}"
        prov += [(f"{label} checkpoint", f'{_e(ckpt.name)} (step {_num(_step_of(ckpt))})'),
                 (f"{label} generator SHA-256", f'<code class="digest" data-checkpoint="{_e(ckpt.name)}">'
                  f'{_e(digest)}</code> <small>({_e(weights.name)})</small>')]
    if latest is None:
        prov.append(("checkpoint", "none"))
    sections.append(("provenance", "Provenance", _table(prov, "facts provenance")))

    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{content}</section>' for sid, title, content in sections)
    title = f"genkit report: {run_id}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{MARKER}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{_e(title)}</title><style>{CSS}</style></head>'
            f'<body><header><h1>{_e(run_id)}</h1><p>{_e(domain_name)} run · genkit {_e(__version__)} report</p>'
            f'<nav>{nav}</nav></header><main>{body}</main>'
            f'<footer>Generated by genkit {_e(__version__)}. Self-contained: nothing on this page is fetched from '
            f'the network.</footer></body></html>\n')


CSS = """
:root{--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#fff;--panel:#f9fafb;--accent:#2563eb}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:var(--fg);background:var(--bg)}
header,main,footer{max-width:1180px;margin:0 auto;padding:0 16px}
header{padding-top:16px;border-bottom:1px solid var(--line)}
h1{font-size:1.5rem;margin:0;word-break:break-all}
h2{font-size:1.2rem;margin:28px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:1rem;margin:12px 0 8px}
header p{margin:2px 0 8px;color:var(--muted)}
nav{display:flex;flex-wrap:wrap;gap:4px 14px;padding:6px 0 10px}
nav a{color:var(--accent);text-decoration:none}
footer{color:var(--muted);font-size:.85rem;padding:24px 16px}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85rem}
pre{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:10px;margin:0;
 overflow:auto;white-space:pre-wrap;word-break:break-word}
pre.config{max-height:22em}
.note{color:var(--muted);font-size:.9rem;margin:6px 0}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;margin:4px 0}
th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
table.facts th{color:var(--muted);font-weight:500;white-space:nowrap}
table.facts td{word-break:break-word}
table.metrics td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.metrics thead th{text-align:right;background:var(--panel)}
table.metrics thead th:first-child{text-align:left}
table.metrics tbody th{font-weight:500;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
tr.best-metric th::after{content:" ★";color:#d97706}
.digest{word-break:break-all}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.chart-box{margin:0;border:1px solid var(--line);border-radius:6px;padding:8px;background:var(--bg)}
.chart-box figcaption{font-weight:600;font-size:.9rem;word-break:break-all}
svg.chart{display:block;width:100%;height:auto}
svg.chart .grid{stroke:#eef0f3;stroke-width:1}
svg.chart .axis,svg.chart .tickmark{stroke:#9ca3af;stroke-width:1}
svg.chart .tick{font-size:10px;fill:var(--muted)}
svg.chart .label{font-size:11px;fill:var(--muted)}
svg.chart .series{fill:none;stroke-width:1.8;stroke-linejoin:round;stroke-linecap:round}
.legend{list-style:none;margin:2px 0 0;padding:0;display:flex;flex-wrap:wrap;gap:2px 12px;font-size:.8rem}
.legend i{display:inline-block;width:18px;border-top:3px solid;margin-right:5px;vertical-align:middle}
.legend i.dashed{border-top-style:dashed}
.snapshots{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr));gap:16px}
.snapshots>.note{grid-column:1/-1}
figure{margin:0 0 10px}
figcaption{color:var(--muted);font-size:.8rem}
.sample-image img{display:block;max-width:100%;height:auto;image-rendering:pixelated;
 border:1px solid var(--line);background:#fff}
.sample-text pre{max-height:28em}
.clips{list-style:none;margin:8px 0;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:6px}
.clip{display:flex;flex-direction:column;font-size:.8rem;color:var(--muted)}
.clip audio{width:100%;height:36px}
table.classes{width:100%}
table.classes th{width:8em;white-space:nowrap}
table.classes th small{display:block;color:var(--muted);font-weight:400}
table.classes .clips{grid-template-columns:repeat(auto-fill,minmax(180px,1fr))}
@media (max-width:600px){body{font-size:14px}header,main,footer{padding:0 10px}
 table.classes th{width:auto;white-space:normal}th,td{padding:4px 6px}
 .charts{grid-template-columns:1fr}}
@media print{nav{display:none}pre.config{max-height:none}}
"""
