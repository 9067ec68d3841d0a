"""``genkit report RUN``: a self-contained HTML page per run, checked as text and in a real headless browser.

The browser test drives the system Chromium (Debian's ``chromium`` package; ``.ci/run`` installs it where missing)
with Playwright. Without Playwright or a browser it is skipped with the reason (``-rs`` prints it), never passed.
Screenshots go to ``$GENKIT_ARTEFACTS`` (default: the test's temporary folder); with ``GENKIT_WRITE_DOCS_IMAGES=1``
the laptop screenshots are also written, reduced, to docs/images/report-DOMAIN.png.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("image", "audio", "text")
SENTENCES = [f"{s} {v} {o}".capitalize() for s in ("the cat", "a dog", "my friend", "the teacher", "an old man")
             for v in ("sees", "likes", "follows", "finds") for o in ("the ball.", "a red car.", "the garden!",
                                                                       "its owner.", "the café.")]


def cli(*args: object):
    from genkit.cli import create_cli

    return CliRunner().invoke(create_cli(), [str(a) for a in args], catch_exceptions=False)


def _image_data(path: Path) -> Path:
    """Two labelled classes of 28 px images (a bright square top-left or bottom-right on noise)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, (400, 28, 28)).astype(np.uint8)
    y = np.arange(400) % 2
    x[y == 0, 2:12, 2:12] = 250
    x[y == 1, 16:26, 16:26] = 250
    np.savez(path, x=x, y=y)
    return path


def _audio_data(root: Path) -> Path:
    """Eight 8 kHz clips of two labelled tones (labels from the file names: a conditional run)."""
    import soundfile as sf

    rs = np.random.RandomState(0)
    root.mkdir()
    for label, freq in (("low", 400), ("high", 1200)):
        for take in range(4):
            t = np.arange(rs.randint(3000, 6000)) / 8000
            sf.write(str(root / f"{label}_spk_{take}.wav"), (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny finished run of each domain (a few seconds each): image and audio conditional, image and text evaluated
    twice (curves of their metrics), snapshots at step 2 and at the end, and a report of each."""
    tmp = tmp_path_factory.mktemp("report-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENKIT_CACHE", str(tmp / "cache"))
        common = ["--steps", "4", "--log-every", "1", "--sample-every", "2", "--quiet"]
        image = ["run", "image", "--data", _image_data(tmp / "d.npz"), "--g-width", "8", "--d-width", "8",
                 "--batch-size", "16", "--eval-samples", "100", "--eval-every", "2", "--checkpoint-every", "2"]
        audio = ["run", "audio", "--data", _audio_data(tmp / "clips"), "--model", "specgan", "--model-size", "2",
                 "--batch-size", "4", "--griffin-lim-iters", "2", "--eval-samples", "0"]
        corpus = tmp / "corpus.txt"
        corpus.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
        text = ["run", "text", "--data", corpus, "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--d-embed", "16",
                "--d-filters", "8", "--vocab-size", "300", "--max-len", "12", "--batch-size", "8", "--pretrain-steps",
                "3", "--bleu-samples", "20", "--sweep", "1.0", "--eval-every", "2", "--checkpoint-every", "2",
                "--device", "cpu"]
        out = {}
        for name, args in (("image", image), ("audio", audio), ("text", text)):
            result = cli(*args, *common, "--out", tmp / name)
            assert result.exit_code == 0, result.output + result.stderr
            reported = cli("report", tmp / name, "--json")
            assert reported.exit_code == 0, reported.output + reported.stderr
            out[name] = Path(json.loads(reported.stdout)["report"])
            assert out[name] == tmp / name / "report.html"
    return out


def page(runs, domain: str) -> str:
    return runs[domain].read_text(encoding="utf-8")


@pytest.mark.parametrize("domain", DOMAINS)
def test_report_is_self_contained_and_complete(runs, domain):
    import genkit
    from genkit.checkpoint import file_digest
    from genkit.run import Run

    text = page(runs, domain)
    run = Run.open(runs[domain].parent)
    # self-contained: nothing is loaded from elsewhere (no http(s) or protocol-relative src / href, no script)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert all(src.startswith("data:") for src in re.findall(r'<(?:img|audio)[^>]*\ssrc="([^"]*)"', text))
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    # the config, verbatim
    config = re.search(r'<pre class="config" id="config-toml">(.*?)</pre>', text, re.S)
    assert config and html.unescape(config.group(1)) == run.config_path.read_text(encoding="utf-8")
    # a curve per loss, each with one point per logged step
    steps = [r["step"] for r in run.metrics() if "loss_d" in r and "phase" not in r]
    for key in ("loss_d", "loss_g", "d_real", "d_fake"):
        points = re.search(rf'<polyline class="series" data-key="{key}" points="([^"]*)"', text)
        assert points, key
        assert len(points.group(1).split()) == len(steps) > 1
    # provenance: version, domain, run id and the generator's digest of the latest checkpoint
    latest = run.latest_checkpoint()
    assert f'data-checkpoint="{latest.name}">{file_digest(Run.generator_weights(latest))}</code>' in text
    provenance = text[text.index('id="provenance"'):]
    assert "generated by" in provenance and f"genkit {genkit.__version__}" in provenance
    assert html.escape(str(getattr(run, "run_id", run.root.name))) in provenance and f"<td>{domain}</td>" in provenance
    assert f"step {int(latest.name.split('-')[1]):,}" in provenance
    # the latest snapshot, by kind
    latest_snapshot = text[text.index('id="snapshot-latest"'):]
    if domain == "image":
        assert latest_snapshot.count("data:image/png;base64,") >= 1 and "final.png" in latest_snapshot
    elif domain == "audio":
        clips = sorted((run.samples_dir / "final").glob("*.wav"))
        assert len(clips) > 0 and latest_snapshot.count("data:audio/wav;base64,") >= len(clips)
        assert "final.png" in latest_snapshot  # the spectrograms of those clips
    else:
        first = (run.samples_dir / "final.txt").read_text(encoding="utf-8").splitlines()[0]
        assert html.escape(first) in latest_snapshot and '<figure class="sample-text"><pre>' in latest_snapshot


def test_evaluation_table_sets_metrics_beside_the_real_data(runs):
    from genkit.run import Run

    image = page(runs, "image")
    metrics = Run.open(runs["image"].parent).read_summary()["metrics"]
    row = re.search(r"<tr[^>]*><th>refnet_is</th><td>([^<]*)</td><td>([^<]*)</td></tr>", image)
    assert row and float(row.group(2)) == pytest.approx(metrics["refnet_is_real"], rel=1e-3)
    assert "<th>refnet_is_real</th>" not in image  # a reference is a column, not a row of its own
    assert '<tr class="best-metric"' in image and "<th>refnet_fd</th>" in image  # the metric choosing checkpoints/best
    text = page(runs, "text")
    head = re.search(r'<table class="metrics" id="evaluation"><thead>(.*?)</thead>', text).group(1)
    assert "<th>real data</th>" in head and "<th>MLE t=1</th>" in head  # and the MLE baseline beside them
    assert re.search(r"<th>ngram4_in_train</th><td>[^<]*</td><td>[0-9.]+</td>", text)
    assert re.search(r"<th>self_bleu4_at_real_n</th><td>[^<]*</td><td>[0-9.]+</td>", text)
    assert 'id="chart-bleu2_method1"' in text  # evaluated twice: its curves are drawn
    assert "No evaluation in this run." in page(runs, "audio")


@pytest.mark.parametrize("domain", ["image", "audio"])
def test_conditional_run_has_one_row_per_class(runs, domain):
    meta = json.loads((runs[domain].parent / "data.json").read_text())
    text = page(runs, domain)
    rows = re.findall(r'<tr class="class-row" data-class="(\d+)"><th>([^<]*)<small>', text)
    assert meta["conditional"] and [int(c) for c, _ in rows] == list(range(meta["num_classes"]))
    assert [name for _, name in rows] == meta["class_names"]
    per_row = text[text.index('id="classes"'):].split('<tr class="class-row"')[1:]
    kind = "data:image/png" if domain == "image" else "data:audio/wav"
    assert all(kind in row for row in per_row)
    assert 'class-row' not in page(runs, "text")


def test_report_refuses_a_users_file_and_a_missing_run(runs, tmp_path):
    run = runs["image"].parent
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    refused = cli("report", run, "--out", mine)
    assert refused.exit_code == 1 and mine.read_text() == "<p>my notes</p>"
    assert refused.stderr.strip().splitlines() == [
        f"genkit: error: --out {mine} exists and is not a genkit report; genkit does not overwrite it"]
    again = cli("report", run, "--out", tmp_path / "r.html")  # a new file, then a report over a report: fine
    assert again.exit_code == 0 and again.stdout.strip() == str(tmp_path / "r.html")
    assert cli("report", run, "--out", tmp_path / "r.html").exit_code == 0
    missing = cli("report", tmp_path / "nowhere")
    assert missing.exit_code == 1
    assert missing.stderr.strip().splitlines() == [f"genkit: error: no such run or checkpoint: {tmp_path / 'nowhere'}"]


def test_report_help_does_not_import_torch():
    code = ("import sys\nfrom genkit.cli import create_cli\ncreate_cli().main(['report', '--help'], standalone_mode=False)\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--out" in out.stdout and out.stdout.strip().splitlines()[-1] == "NO-TORCH"


# -- in a real browser ------------------------------------------------------------------------------------------
def _browser() -> str:
    """The system Chromium's path, or skip saying what is missing (shown with -rs)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("browser test skipped: playwright is not installed (pip install playwright, or '.[test]')")
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("browser test skipped: no chromium on PATH (apt-get install chromium; .ci/run installs it as root)")


CHECK_PAGE = """async () => {
  const images = [...document.images];
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  const audios = [...document.querySelectorAll('audio')];
  await Promise.all(audios.map(a => a.readyState >= 1 ? null : new Promise(done => {
    a.addEventListener('loadedmetadata', done, {once: true});
    a.addEventListener('error', done, {once: true});
    a.load();
  })));
  const charts = [...document.querySelectorAll('svg.chart')].map(svg => {
    const lines = [...svg.querySelectorAll('polyline.series')];
    return {id: svg.id, drawn: lines.some(l => l.points.numberOfItems > 1 && l.getBBox().width > 0 && l.getBBox().height >= 0),
            lines: lines.map(l => ({key: l.dataset.key, n: l.points.numberOfItems, w: l.getBBox().width}))};
  });
  return {
    images: images.map(img => ({complete: img.complete, w: img.naturalWidth, h: img.naturalHeight, alt: img.alt})),
    audios: audios.map(a => ({duration: a.duration, error: a.error ? a.error.code : null, title: a.title})),
    charts,
    overflow: document.documentElement.scrollWidth - window.innerWidth,
  };
}"""


def _docs_image(full_page: Path, target: Path) -> None:
    """The top of the laptop screenshot (overview, config, curves, samples), halved, in a 256-colour palette."""
    from PIL import Image

    with Image.open(full_page) as shot:
        top = shot.convert("RGB").crop((0, 0, shot.width, min(shot.height, 2600)))
        small = top.resize((top.width // 2, top.height // 2), Image.LANCZOS)
        small.quantize(colors=256, method=Image.FASTOCTREE).save(target, optimize=True)


def _open(browser, url: str, width: int, height: int, shot: Path) -> tuple[dict, list[str]]:
    """The page at ``url`` in a ``width`` x ``height`` viewport: what CHECK_PAGE found, the errors, a screenshot."""
    tab = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    tab.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    tab.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
    tab.goto(url, wait_until="load")
    state = tab.evaluate(CHECK_PAGE)
    tab.screenshot(path=str(shot), full_page=True)
    tab.close()
    return state, errors


@pytest.mark.parametrize("domain", DOMAINS)
def test_report_in_a_real_browser(request, domain, tmp_path):
    executable = _browser()  # before the runs are trained: a skip costs nothing
    runs = request.getfixturevalue("runs")
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    artefacts = Path(os.environ.get("GENKIT_ARTEFACTS", tmp_path)) / "report-screenshots"
    artefacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except PlaywrightError as exc:
            pytest.skip(f"browser test skipped: {executable} does not start ({str(exc).splitlines()[0]})")
        try:
            for view, (width, height) in (("laptop", (1366, 900)), ("phone", (390, 844))):
                shot = artefacts / f"report-{domain}-{view}.png"
                state, errors = _open(browser, runs[domain].as_uri(), width, height, shot)
                print(f"{domain} {view}: {len(state['images'])} images, {len(state['audios'])} audio, "
                      f"{len(state['charts'])} charts; screenshot {shot}")
                assert errors == [], errors
                assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in state["images"]), state["images"]
                assert len(state["images"]) >= (0 if domain == "text" else 2)  # a snapshot and the per-class samples
                durations = [a["duration"] for a in state["audios"]]
                assert all(isinstance(d, (int, float)) and 0 < d < float("inf") for d in durations), state["audios"]
                if domain == "audio":
                    assert len(durations) >= 20  # the final snapshot's clips and the per-class clips
                assert len(state["charts"]) >= 2 and all(c["drawn"] for c in state["charts"]), state["charts"]
                assert state["overflow"] <= 1, f"{view}: the page is {state['overflow']} px wider than the screen"
                if view == "laptop" and os.environ.get("GENKIT_WRITE_DOCS_IMAGES") == "1":
                    _docs_image(shot, ROOT / "docs" / "images" / f"report-{domain}.png")
        finally:
            browser.close()
