"""The HTML report: notebook 06 writes it with the ablation table filled from demo checkpoints; it
renders in Debian's chromium (Playwright, ``executable_path``) with no network request and no error,
and ``tinytribe report`` rebuilds it from the saved results. The PNG is kept as a test artifact."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tinytribe.cli import run_notebook
from tinytribe.eval.report import ABLATION_ROWS, verdict, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("TINYTRIBE_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


def render_in_chromium(page_path: Path, png: Path) -> dict:
    """Open ``page_path`` in headless chromium; every request, console error and page error, and the
    ablation table's cells as the browser lays them out."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "the report test needs Debian's chromium (bash scripts/setup.sh --test installs it)"
    seen: dict = {"requests": [], "errors": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda r: seen["requests"].append(r.url))
        page.on("console", lambda m: seen["errors"].append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                   else route.abort())
        page.goto(page_path.resolve().as_uri())
        page.wait_for_load_state("load")
        seen["table"] = page.eval_on_selector_all(
            "table:first-of-type tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))")
        seen["images"] = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.naturalWidth, i.alt])")
        png.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(png), full_page=True)
        browser.close()
    return seen


@pytest.mark.notebook
@pytest.mark.slow
def test_the_report_renders_in_chromium_with_the_ablation_filled(demo_study, ablation_checkpoints, tmp_path):
    out = tmp_path / "eval"
    run_notebook("06_evaluate", tmp_path / "exec", {
        "study_dir": str(demo_study), "out_dir": str(out), "ridge_iterations": 5, "stats_resamples": 50,
        "ablation": {k: str(v) for k, v in ablation_checkpoints.items()}}, cwd=tmp_path)
    page = out / "report.html"
    seen = render_in_chromium(page, ARTIFACTS / "report.png")
    assert [u for u in seen["requests"] if not u.startswith("data:")] == [page.resolve().as_uri()], seen["requests"]
    assert seen["errors"] == []
    table = seen["table"]
    assert [r[0].replace("\n", " ") for r in table[1:]] == list(ABLATION_ROWS)
    for row in table[1:]:
        assert row[2].split()[0].lstrip("-").replace(".", "").isdigit(), row      # a mean r with its interval
        assert "[" in row[2] and "/" in row[6]
    for row, name in zip(table[3:], ABLATION_ROWS[2:]):                             # the checkpoint each came from
        assert str(ablation_checkpoints[name]) in row[1].replace("\n", "")
    assert len(seen["images"]) >= 6 and all(w > 0 for w, _ in seen["images"])      # bars, maps, 4 loss curves
    html = page.read_text()
    assert "http://" not in html and "https://" not in html and "embedded demo study" in html
    before = page.read_bytes()
    page.unlink()
    from tinytribe.cli import main

    assert main(["report", str(out)]) == 0 and page.read_bytes() == before        # rebuilt from results.json
    assert (ARTIFACTS / "report.png").stat().st_size > 100_000


def _results(full: tuple[float, float, float], alone: tuple[float, float, float], demo: bool = False) -> dict:
    def iv(t):
        return {"mean_r": {"estimate": t[0], "low": t[1], "high": t[2]}}

    return {"demo": demo, "stats": {"models": {"a": iv(full), "b": iv(alone)}},
            "ablation": [{"row": "Phase 1 → 2 → 3", "model": "a"}, {"row": "Phase 3 alone", "model": "b"}]}


def test_the_verdict_says_what_the_table_shows():
    text, warn = verdict(_results((0.30, 0.27, 0.33), (0.20, 0.17, 0.23)))
    assert "the central claim holds" in text and not warn
    text, warn = verdict(_results((0.20, 0.17, 0.23), (0.30, 0.27, 0.33)))
    assert "the central claim fails" in text and warn
    text, warn = verdict(_results((0.25, 0.20, 0.30), (0.24, 0.19, 0.29)))
    assert "does not resolve" in text and warn
    text, warn = verdict(_results((0.30, 0.27, 0.33), (0.20, 0.17, 0.23), demo=True))
    assert "embedded demo study" in text and "does not test" in text
    text, _ = verdict({"stats": {"models": {}}, "ablation": [{"row": "Phase 3 alone", "model": None}]})
    assert "not tested: no scores for Phase 1 → 2 → 3, Phase 3 alone" in text


def test_rebuilding_needs_saved_results(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"results.json: no saved results to rebuild the report from"):
        write_report(tmp_path)
    path = write_report(tmp_path, {"title": "t", "stats": {}, "ablation": []})
    assert json.loads((tmp_path / "results.json").read_text())["title"] == "t" and path.is_file()
