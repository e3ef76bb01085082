"""The HTML report: notebook 06 writes it with the ablation table filled from demo checkpoints; it
renders in Debian's chromium (Playwright, ``executable_path``) with no network request and no error,
and ``tinytribe report`` rebuilds it from the saved results. The PNG is kept as a test artifact."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tinytribe.pipeline import run_notebook
from tinytribe.eval.report import (ABLATION_ROWS, ablation_rows, ablation_text, lineage_problem, verdict,
                                   write_report)

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
        seen["contrasts"] = page.eval_on_selector_all(
            "table:nth-of-type(2) tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))")
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
        for col in (2, 3, 5):                                                      # r, r / ceiling, Algonauts
            lo, hi = row[col].split("[")[1].rstrip("]").split(",")
            assert float(lo) <= float(row[col].split()[0]) <= float(hi), row
        assert "/" in row[6] and row[4].lstrip("-").replace(".", "").isdigit()
    for row, name in zip(table[3:], ABLATION_ROWS[2:]):                             # the checkpoint each came from
        assert str(ablation_checkpoints[name]) in row[1].replace("\n", "") and "⚠" not in row[1]
    assert "lineage fmri ← kd ← selfsup" in table[6][1].replace("\n", " ")
    assert [r[0] for r in seen["contrasts"][1:]] == ["Phase 1 → 2 → 3 − Phase 3 alone", "Phase 2 → 3 − Phase 3 alone"]
    # bars, maps, ridge bands, and one loss-curve figure per checkpoint: each decoded by the browser
    assert len(seen["images"]) == 3 + 4 and all(w > 100 for w, _ in seen["images"]), seen["images"]
    html = page.read_text()
    assert "http://" not in html and "https://" not in html and "embedded demo study" in html
    before = page.read_bytes()
    page.unlink()
    from tinytribe.cli import main

    assert main(["report", str(out)]) == 0 and page.read_bytes() == before        # rebuilt from results.json
    assert (ARTIFACTS / "report.png").stat().st_size > 100_000

    results = json.loads((out / "results.json").read_text())   # the main job's printed summary of the same
    lines = ablation_text(results).splitlines()
    models = results["stats"]["models"]
    for name in ABLATION_ROWS:
        line = next(x for x in lines if x.startswith(name + " "))
        r = models[name]["mean_r"]
        assert line.split()[len(name.split())] == f"{r['estimate']:.3f}", line     # the page's numbers, as text
        assert f"[{r['low']:.3f}, {r['high']:.3f}]" in line
    assert sum(x.startswith("Phase 1 → 2 → 3 − Phase 3 alone: ") for x in lines) == 1
    assert "embedded demo study" in lines[-1]


def _results(diff: tuple[float, float, float], demo: bool = False, problem: str | None = None) -> dict:
    ck = {"lineage_problem": problem} if problem else {}
    return {"demo": demo, "stats": {"models": {"a": {}, "b": {}}},
            "contrasts": {"Phase 1 → 2 → 3 − Phase 3 alone": dict(zip(("estimate", "low", "high"), diff))},
            "ablation": [{"row": "Phase 1 → 2 → 3", "model": "a", "checkpoint": ck},
                         {"row": "Phase 3 alone", "model": "b"}]}


def test_the_verdict_reads_the_paired_contrast():
    # marginal intervals of 0.25 [0.20, 0.30] and 0.24 [0.19, 0.29] overlap, yet the paired difference can be clear
    text, warn = verdict(_results((0.010, 0.004, 0.016)))
    assert "the central claim holds" in text and "+0.010 [+0.004, +0.016]" in text and not warn
    text, warn = verdict(_results((-0.05, -0.08, -0.02)))
    assert "the central claim fails" in text and warn
    text, warn = verdict(_results((0.01, -0.02, 0.04)))
    assert "does not resolve" in text and warn
    text, warn = verdict(_results((0.01, 0.004, 0.016), problem="its lineage is fmri (expected fmri ← kd ← selfsup)"))
    assert "not tested" in text and "Phase 1 → 2 → 3" in text and warn
    text, warn = verdict(_results((0.010, 0.004, 0.016), demo=True))
    assert "embedded demo study" in text and "does not test" in text
    text, _ = verdict({"stats": {"models": {}}, "ablation": [{"row": "Phase 3 alone", "model": None}]})
    assert "not tested: no scores for Phase 1 → 2 → 3, Phase 3 alone" in text


def test_the_text_summary_names_what_was_not_scored():
    text = ablation_text({"demo": True, "study": {"name": "s", "split": "test", "subjects": ["a"]},
                          "stats": {"models": {}}, "ablation": [{"row": "Phase 3 alone", "model": None,
                                                                   "note": "runs/x.pt does not exist"}],
                          "contrasts": {"Phase 2 → 3 − Phase 3 alone": {"estimate": None, "low": None, "high": None}}})
    assert "Phase 3 alone       not scored: runs/x.pt does not exist" in text
    assert "Phase 2 → 3 − Phase 3 alone: not computed" in text and text.startswith("The ablation on s's held-out")


def test_ablation_rows_and_lineages():
    assert ablation_rows({"Phase 1 -> 2 -> 3": "a.pt"}) == {"Phase 1 → 2 → 3": "a.pt"}
    with pytest.raises(ValueError, match=r"ablation row 'Phase 4': not one of Phase 3 alone, Phase 2 alone"):
        ablation_rows({"Phase 4": "a.pt"})
    with pytest.raises(ValueError, match=r"ridge and teacher are always scored"):
        ablation_rows({"ridge": "a.pt"})
    assert lineage_problem("Phase 2 → 3", [{"phase": "fmri"}, {"phase": "kd"}]) is None
    assert lineage_problem("Phase 2 → 3", [{"phase": "fmri"}]) == (
        "its lineage is fmri (expected fmri ← kd): the row's label does not describe this checkpoint")


def test_the_page_escapes_names_and_survives_nan(tmp_path):
    results = {"title": "<b>t</b>", "ceiling_mean": float("nan"), "rois_ceiling": {"V1": float("nan")},
               "stats": {"models": {"a<&>b": {"mean_r": {"estimate": 0.1, "low": float("nan"), "high": 0.2},
                                             "rois": {"V1": {"estimate": float("nan"), "low": None, "high": None}}}}},
               "ablation": [], "checkpoints": {"x": {"path": "p<q>.pt", "params_m": float("nan")}}}
    page = write_report(tmp_path, results)
    text = page.read_text()
    assert "a&lt;&amp;&gt;b" in text and "<b>t</b>" not in text and "p&lt;q&gt;.pt" in text
    first = page.read_bytes()
    write_report(tmp_path)                                          # rebuilt from the saved JSON (NaN as null)
    assert page.read_bytes() == first
    (tmp_path / "results.json").write_text("{nope")
    with pytest.raises(ValueError, match=r"results.json: not valid JSON"):
        write_report(tmp_path)


def test_rebuilding_needs_saved_results(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"results.json: no saved results to rebuild the report from"):
        write_report(tmp_path)
    path = write_report(tmp_path, {"title": "t", "stats": {}, "ablation": []})
    assert json.loads((tmp_path / "results.json").read_text())["title"] == "t" and path.is_file()


def test_logs_of_runs_with_one_name_are_kept_apart(demo_checkpoint, tmp_path):
    import shutil

    from tinytribe.eval.report import checkpoint_info

    copies = []
    for exp in ("exp1", "exp2"):
        run = tmp_path / exp / "phase3"
        shutil.copytree(demo_checkpoint.parent.parent, run)
        (run / "train_log.csv").write_text(f"step,loss\n1,{len(exp)}.{exp[-1]}\n")
        copies.append(checkpoint_info(run / "checkpoints" / demo_checkpoint.name, tmp_path / "out"))
    logs = [tmp_path / "out" / c["train_log"] for c in copies]
    assert logs[0] != logs[1] and [p.read_text() for p in logs] == ["step,loss\n1,4.1\n", "step,loss\n1,4.2\n"]
