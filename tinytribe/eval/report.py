"""One self-contained HTML report per evaluation (and per prediction): opens with no network, every
image inlined.

    write_report("runs/evaluate", results)    # results.json + report.html in that folder
    write_report("runs/evaluate")             # rebuilt from the saved results.json (tinytribe report DIR)

``results`` is a plain dict (saved as ``results.json``) that notebook ``06_evaluate`` assembles:

- ``title``, ``created``, ``provenance`` ({tinytribe_version, git_revision}), ``demo`` (bool: the
  embedded demo study, whose subjects are simulated);
- ``study``: name, space, split, subjects, stimuli, n_samples; ``ceiling_mean``;
- ``stats``: :meth:`~tinytribe.eval.study_stats.StudyStats.to_dict` of every model on the split;
- ``ablation``: rows ``{"row", "model" (a key of stats.models or None), "checkpoint" (info or None),
  "note"}`` in the design's order (ridge; teacher; Phase 3 alone; Phase 2 alone; Phase 2 → 3;
  Phase 1 → 2 → 3);
- ``checkpoints``: model name -> {path, phase, step, recipe, model, params_m, space, init_from,
  train_log, val_log};
- ``speed``: {device, student_ms_per_s, end_to_end_ms_per_s, ...};
- ``figures``: [{"title", "path" (relative to the folder)}], PNGs the evaluation saved.

The loss curves are drawn here, from each checkpoint's training logs.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from pathlib import Path

import numpy as np

ABLATION_ROWS = ("ridge", "teacher", "Phase 3 alone", "Phase 2 alone", "Phase 2 → 3", "Phase 1 → 2 → 3")
# the phases each checkpoint row must descend from, newest first (checkpoint phases: selfsup, kd, fmri)
LINEAGE = {"Phase 3 alone": ["fmri"], "Phase 2 alone": ["kd"], "Phase 2 → 3": ["fmri", "kd"],
           "Phase 1 → 2 → 3": ["fmri", "kd", "selfsup"]}
# paired contrasts the verdict reads: the whole design, and distillation alone, against direct fine-tuning
CONTRASTS = (("Phase 1 → 2 → 3", "Phase 3 alone"), ("Phase 2 → 3", "Phase 3 alone"))
CLAIM = ("self-supervision and distillation beat direct fine-tuning: Phase 1 → 2 → 3 above Phase 3 alone "
         "on held-out fMRI")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}
.meta{color:#666}.verdict{border-left:4px solid #4a7;background:#f3faf5;padding:.6em 1em;margin:1em 0}
.verdict.warn{border-color:#c90;background:#fdf8ec}.none{color:#999}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}
code{word-break:break-all}caption{text-align:left;color:#666;font-size:.9em;padding:.2em 0}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:12px}details{margin:.4em 0}
"""


def ablation_rows(ablation: dict) -> dict:
    """The checkpoint rows of an ``ablation`` parameter, names normalised (``->`` is accepted for ``→``).

    Raises:
        ValueError: a row that is not one of the design's checkpoint rows (the baselines are always scored).
    """
    out = {}
    known = [r for r in ABLATION_ROWS if r in LINEAGE]
    for row, path in ablation.items():
        name = " ".join(str(row).replace("->", "→").split())
        if name not in LINEAGE:
            raise ValueError(f"ablation row {row!r}: not one of {', '.join(known)}"
                             + (" (ridge and teacher are always scored)" if name in ABLATION_ROWS else ""))
        out[name] = path
    return out


def checkpoint_info(path: str | Path, out_dir: str | Path | None = None) -> dict:
    """What the report says about a checkpoint: phase, step, recipe, config, parameters, space, teacher,
    its lineage (itself, then each ``init_from`` back: phase and path), and its run's training logs
    (copied into ``out_dir/logs/<run>-<hash of its path>/`` when given, so a moved report keeps its loss
    curves)."""
    import shutil

    from tinytribe.formats import Checkpoint

    c = Checkpoint.load(path)
    run = Path(path).parent.parent
    info = {"path": str(path), "phase": c.phase, "step": c.step, "recipe": c.recipe, "model": c.config.get("name"),
            "params_m": sum(v.numel() for v in c.model_state.values()) / 1e6, "space": c.config.get("space"),
            "init_from": (c.train_config or {}).get("recipe", {}).get("init_from"), "teacher": c.teacher,
            "lineage": [{"phase": c.phase, "path": str(path)}]}
    seen, parent = {str(path)}, info["init_from"]
    while parent and parent not in seen and Path(parent).is_file():
        seen.add(parent)
        pc = Checkpoint.load(parent)
        info["lineage"].append({"phase": pc.phase, "path": str(parent)})
        parent = (pc.train_config or {}).get("recipe", {}).get("init_from")
    if parent and parent not in seen:
        info["lineage"].append({"phase": "?", "path": str(parent), "missing": True})
    # runs of one name in different folders (exp1/phase3, exp2/phase3) keep their own logs
    folder = f"{run.name}-{hashlib.sha256(str(run.resolve()).encode()).hexdigest()[:8]}"
    for name in ("train_log", "val_log"):
        src = run / f"{name}.csv"
        if src.is_file() and out_dir is not None:
            dst = Path(out_dir) / "logs" / folder / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            info[name] = str(dst.relative_to(out_dir))
        elif src.is_file():
            info[name] = str(src)
    return info


def lineage_problem(row: str, lineage: list[dict]) -> str | None:
    """Why a checkpoint does not fit its ablation row (its phases, newest first, against the row's), or None."""
    want = LINEAGE.get(row)
    have = [step["phase"] for step in lineage]
    if want is None or have == want:
        return None
    return (f"its lineage is {' ← '.join(have)} (expected {' ← '.join(want)}): the row's label does not describe "
            f"this checkpoint")


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img(data_b64: str, alt: str, mime: str = "image/png") -> str:
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{data_b64}">'


def _num(x, digits: int = 3) -> str:
    return '<span class="none">–</span>' if x is None else f"{x:.{digits}f}"


def _iv(iv: dict | None, digits: int = 3) -> str:
    if not iv or iv.get("estimate") is None:
        return '<span class="none">–</span>'
    est, lo, hi = (iv.get(k) for k in ("estimate", "low", "high"))
    if lo is None or hi is None:
        return f"{est:.{digits}f} <span class=meta>[–]</span>"
    return f"{est:.{digits}f} <span class=meta>[{lo:.{digits}f}, {hi:.{digits}f}]</span>"


def _table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,), caption: str = "") -> str:
    """An HTML table; columns in ``left`` (text) are left-aligned, the others (numbers) right-aligned."""
    def cls(i: int) -> str:
        return ' class="l"' if i in left else ""

    head = "".join(f"<th scope=col{cls(i)}>{h}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def verdict(results: dict) -> tuple[str, bool]:
    """What the ablation table shows, in a sentence, and whether it is a warning.

    On the demo the table shows the pipeline works end to end (its subjects are simulated from the
    stimuli's features and its teacher is a stand-in: the claim cannot be tested there). On real data it
    reads the paired block-bootstrap interval of mean r(Phase 1 → 2 → 3) − mean r(Phase 3 alone) (the
    same resamples for both): the claim holds when the interval is above 0, fails when below, and is not
    resolved by this split when it contains 0. A checkpoint whose lineage does not fit its row voids it.
    """
    rows = {r["row"]: r for r in results.get("ablation", [])}
    if results.get("demo"):
        models = results.get("stats", {}).get("models", {})
        done = [r for r, v in rows.items() if v.get("model") in models]
        return (f"This is the embedded demo study: simulated subjects and a stand-in teacher. The table shows that "
                f"every stage of the pipeline runs end to end ({len(done)} of {len(ABLATION_ROWS)} rows scored) and "
                f"how the stages compare on simulated data; it does not test the design's central claim "
                f"({CLAIM}). Run this notebook on a real study for that.", False)
    key = "Phase 1 → 2 → 3 − Phase 3 alone"
    iv = (results.get("contrasts") or {}).get(key)
    if not iv or iv.get("low") is None or iv.get("high") is None:
        missing = [r for r in ("Phase 1 → 2 → 3", "Phase 3 alone") if not (rows.get(r) or {}).get("model")]
        return (f"The central claim ({CLAIM}) is not tested: "
                + (f"no scores for {', '.join(missing)}." if missing else "no paired contrast was computed."), True)
    bad = [r for r in ("Phase 1 → 2 → 3", "Phase 3 alone") if ((rows.get(r) or {}).get("checkpoint") or {}).get(
        "lineage_problem")]
    if bad:
        return (f"The central claim is not tested: the checkpoint of {', '.join(bad)} does not have the lineage its "
                f"row names (see the table).", True)
    diff = (f"mean r difference {iv['estimate']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}] "
            f"(paired block bootstrap, {results.get('stats', {}).get('level', 0.95):.0%})")
    if iv["low"] > 0:
        return f"Real data: the central claim holds on this split ({CLAIM}): {diff}.", False
    if iv["high"] < 0:
        return f"Real data: the central claim fails on this split ({CLAIM}): {diff}; Phase 3 alone is better.", True
    return (f"Real data: this split does not resolve the central claim ({CLAIM}): {diff} contains 0 "
            f"(more held-out data would tell them apart).", True)


def _ablation(results: dict) -> str:
    stats = results.get("stats", {})
    models = stats.get("models", {})
    rows = []
    for r in results.get("ablation", []):
        m = models.get(r.get("model") or "")
        ck = r.get("checkpoint") or {}
        chain = " ← ".join(f"{html.escape(str(x['phase']))}" for x in ck.get("lineage", []))
        warn = (f"<br><b>⚠ {html.escape(ck['lineage_problem'])}</b>" if ck.get("lineage_problem") else "")
        src = (f"<code>{html.escape(str(ck.get('path', '')))}</code><br><span class=meta>step {ck.get('step', '?')}; "
               f"lineage {chain}{', from ' + html.escape(str(ck['init_from'])) if ck.get('init_from') else ''}"
               f"</span>{warn}") if ck else html.escape(r.get("note") or "")
        if m is None:
            rows.append([html.escape(r["row"]), f'<span class="none">not scored: {html.escape(r.get("note") or "no checkpoint")}'
                         '</span>', "", "", "", "", ""])
            continue
        sig = f"{m['n_significant']} / {m['n_tested']}"
        rows.append([html.escape(r["row"]), src, _iv(m["mean_r"]), _iv(m.get("r_over_ceiling"), 2),
                     _num(m.get("r2_mean")), _iv(m.get("algonauts")), sig])
    level = f"{stats.get('level', 0.95):.0%}"
    table = _table(["row", "from", f"mean r [{level} CI]", "r / ceiling", "R²", "Algonauts (Schaefer-1000)",
                    f"FDR q={stats.get('q', 0.05)} discoveries"], rows, left=(0, 1),
                   caption="the design's ablation on the held-out split")
    contrasts = results.get("contrasts") or {}
    if contrasts:
        table += _table(["paired contrast", f"mean r difference [{level} CI]"],
                        [[html.escape(k), _iv(v)] for k, v in contrasts.items()], left=(0,),
                        caption="differences on the same bootstrap resamples")
    return table


def ablation_text(results: dict) -> str:
    """The ablation table of a ``results.json`` as plain text (a terminal's summary), the verdict after it."""
    models = results.get("stats", {}).get("models", {})
    level = f"{results.get('stats', {}).get('level', 0.95):.0%}"

    def iv(x: dict | None, digits: int = 3) -> str:
        if not x or x.get("estimate") is None:
            return "–"
        if x.get("low") is None:
            return f"{x['estimate']:.{digits}f}"
        return f"{x['estimate']:.{digits}f} [{x['low']:.{digits}f}, {x['high']:.{digits}f}]"

    study = results.get("study", {})
    lines = [f"The ablation on {study.get('name', '?')}'s held-out {study.get('split', '?')} split "
             f"({len(study.get('subjects', []))} subjects):",
             f"{'':<18}{'mean r [' + level + ' CI]':>26}{'r / ceiling':>20}{'FDR discoveries':>18}"]
    for r in results.get("ablation", []):
        m = models.get(r.get("model") or "")
        if m is None:
            lines.append(f"{r['row']:<18}  not scored: {r.get('note') or 'no checkpoint'}")
            continue
        lines.append(f"{r['row']:<18}{iv(m['mean_r']):>26}{iv(m.get('r_over_ceiling'), 2):>20}"
                     f"{str(m['n_significant']) + ' / ' + str(m['n_tested']):>18}")
    for name, x in (results.get("contrasts") or {}).items():
        if None in (x.get("estimate"), x.get("low"), x.get("high")):
            lines.append(f"{name}: not computed (no finite scores)")
            continue
        lines.append(f"{name}: {x['estimate']:+.3f} [{x['low']:+.3f}, {x['high']:+.3f}] (paired block bootstrap)")
    lines.append(verdict(results)[0])
    return "\n".join(lines)


def _rois(results: dict) -> str:
    stats = results.get("stats", {})
    models = stats.get("models", {})
    if not models:
        return "<p class=none>no scores</p>"
    names = list(models)
    rois = list(next(iter(models.values()))["rois"])
    rows = [["cortex", "", *[_iv(models[n]["mean_r"]) for n in names]]]
    for roi in rois:
        rows.append([html.escape(roi), str(stats.get("roi_outputs", {}).get(roi, "")),
                     *[_iv(models[n]["rois"].get(roi)) for n in names]])
    ceil = results.get("rois_ceiling", {})
    header = ["ROI", "outputs", *[html.escape(n) for n in names]]
    if ceil:
        header.append("ceiling")
        rows[0].append(_num(results.get("ceiling_mean")))
        for row, roi in zip(rows[1:], rois):
            row.append(_num(ceil.get(roi)))
    return _table(header, rows, caption="mean r per ROI with its interval; the pooled noise ceiling")


def _loss_curves(results: dict, root: Path) -> str:
    from tinytribe._io import read_csv_columns
    from tinytribe.eval.plots import plot_training

    parts = []
    for name, ck in results.get("checkpoints", {}).items():
        log = root / ck["train_log"] if ck.get("train_log") else None   # relative to the report's folder
        if log is None or not log.is_file():
            parts.append(f"<p class=none>{html.escape(name)}: no training log</p>")
            continue
        val = root / ck["val_log"] if ck.get("val_log") else None
        val_log = read_csv_columns(val) if val is not None and val.is_file() else None
        fig = plot_training(read_csv_columns(log), val_log)
        fig.suptitle(f"{name}: {ck.get('recipe') or ck.get('phase')}", fontsize=9)
        parts.append(f"<h3>{html.escape(name)}</h3>" + _img(_png(fig), f"loss curves of {name}"))
    return "".join(parts) or "<p class=none>no training logs beside the checkpoints</p>"


def _speed(results: dict) -> str:
    sp = results.get("speed")
    if not sp:
        return "<p class=none>not measured</p>"
    rows = [[html.escape(str(k).replace("_", " ")), html.escape(f"{v:.3f}" if isinstance(v, float) else str(v))]
            for k, v in sp.items()]
    return _table(["measure", "value"], rows, left=(0, 1))


def _config(results: dict) -> str:
    cfg = results.get("config") or {}
    if not cfg:
        return ""
    return _table(["setting", "value"], [[html.escape(k), html.escape(str(v))] for k, v in cfg.items()], left=(0, 1),
                  caption="this evaluation's settings")


def _checkpoints(results: dict) -> str:
    cks = results.get("checkpoints", {})
    if not cks:
        return "<p class=none>no student checkpoint</p>"
    rows = [[html.escape(n), f"<code>{html.escape(str(c.get('path')))}</code>", html.escape(str(c.get("phase"))),
             str(c.get("step")), html.escape(str(c.get("recipe", ""))), html.escape(str(c.get("model", ""))),
             _num(c.get("params_m"), 2) + "M", html.escape(str(c.get("space", ""))),
             html.escape(str(c.get("init_from") or "–")), html.escape(_teacher(c))] for n, c in cks.items()]
    note = ("<p class=meta>A student distilled from TRIBE v2 (its outputs and weights are CC BY-NC 4.0) is bound by "
            "the non-commercial condition; one trained only on fMRI and self-supervision is not. The teacher column "
            "is the one each checkpoint's own training used (its init_from may have used another).</p>")
    return _table(["model", "checkpoint", "phase", "step", "recipe", "config", "parameters", "space", "init from",
                   "teacher"], rows, left=(0, 1, 2, 4, 5, 7, 8, 9)) + note


def _teacher(c: dict) -> str:
    t = c.get("teacher")
    if not t:
        return "none" if "teacher" in c else "?"
    return f"{t.get('id', '?')} ({t.get('revision', '?')})"


def render(results: dict, root: str | Path) -> str:
    """The report as one HTML string (images inlined from ``root`` and drawn from the logs). ``results``
    is read as saved (NaN as None), so a page and its rebuild are the same."""
    results = _plain(results)
    root = Path(root)
    study = results.get("study", {})
    stats = results.get("stats", {})
    prov = results.get("provenance", {})
    text, warn = verdict(results)
    figures = []
    for f in results.get("figures", []):
        p = root / f["path"]
        if p.is_file():
            figures.append(_file_img(p, f["title"]))
    conventions = stats.get("conventions", {})
    conv = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in conventions.items())
    subjects = study.get("subjects", [])
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{html.escape(results.get('title', 'Tiny-TRIBE report'))}</title>",
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(results.get('title', 'Tiny-TRIBE report'))}</h1>",
        f"<p class=meta>{html.escape(study.get('name', ''))}, {html.escape(study.get('split', ''))} split: "
        f"{len(subjects)} subjects, {len(study.get('stimuli', []))} held-out stimuli, {study.get('n_samples', '?')} TRs "
        f"per presentation, {html.escape(study.get('space', ''))}. tinytribe {html.escape(str(prov.get('tinytribe_version', '?')))}"
        f" ({html.escape(str(prov.get('git_revision', '?')))}), {html.escape(results.get('created', ''))}.</p>",
        f"<div class=\"verdict{' warn' if warn else ''}\">{html.escape(text)}</div>",
        "<h2>Ablation on the held-out split</h2>", _ablation(results),
        f"<p class=meta>Intervals: {stats.get('level', 0.95):.0%} circular block bootstrap over TRs "
        f"({stats.get('n_boot', '?')} resamples of {stats.get('block_trs', '?')}-TR = {stats.get('block_s', 0):.0f} s blocks); "
        f"p-values: {stats.get('n_perm', '?')} block permutations per output, Benjamini–Hochberg across the cortex "
        f"outputs. R² is that of the raw prediction (no refit): a prediction off the data's scale (a z-scored "
        f"teacher) has a low or negative R² at the same r. Pooled noise ceiling {_num(results.get('ceiling_mean'))}.</p>",
        "".join(f"<p class=\"verdict warn\">{html.escape(c)}</p>" for c in stats.get("caveats", [])),
        "<h2>Scores per ROI</h2>", _rois(results),
        "<h2>Brain maps</h2>", "".join(figures) or "<p class=none>no maps</p>",
        "<h2>Training</h2>", _loss_curves(results, root),
        "<h2>Speed</h2>", _speed(results),
        "<h2>Checkpoints and configuration</h2>", _checkpoints(results), _config(results),
        f"<details><summary>conventions</summary><ul>{conv}</ul></details>",
        f"<details><summary>results.json</summary><pre>{html.escape(json.dumps(_brief(results), indent=1))}</pre></details>",
        "</body></html>"]
    return "\n".join(parts)


def _brief(results: dict) -> dict:
    """``results`` without the bulky per-output lists (for the page's raw view)."""
    out = json.loads(json.dumps(results))
    for m in out.get("stats", {}).get("models", {}).values():
        for k in ("r", "p", "p_adjusted", "r_low", "r_high", "significant"):
            m.pop(k, None)
    return out


def write_report(out_dir: str | Path, results: dict | None = None) -> Path:
    """Save ``results`` as ``out_dir/results.json`` (or read it, to rebuild) and write ``out_dir/report.html``.

    Raises:
        FileNotFoundError: no ``results`` given and no ``results.json`` in ``out_dir``.
    """
    from tinytribe._io import atomic_write, atomic_write_json

    out = Path(out_dir)
    path = out / "results.json"
    if results is None:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no saved results to rebuild the report from (notebook 06_evaluate "
                                    f"writes them)")
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    else:
        atomic_write_json(path, _plain(results))
    try:
        page = render(results, out)
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: results the report cannot read ({type(e).__name__}: {e}); rewrite them with "
                         f"notebook 06_evaluate") from None
    return atomic_write(out / "report.html", lambda f: f.write(page.encode("utf-8")))


def _file_img(path: Path, title: str) -> str:
    mime = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}[path.suffix.lower()]
    return f"<h3>{html.escape(title)}</h3>" + _img(base64.b64encode(path.read_bytes()).decode(), title, mime)


def write_prediction_report(path: str | Path, metadata: dict, pictures: list[tuple[str, str | Path]]) -> Path:
    """One self-contained HTML page for a prediction: what was predicted (stimulus, subject, space, TR,
    samples, modalities, checkpoint, provenance), the output files, and the pictures inlined
    (``(title, file)`` pairs: PNG maps and time courses, the GIF movie). Atomic."""
    from tinytribe._io import atomic_write

    path = Path(path)
    keys = ("stimulus", "source", "subject", "space", "tr_s", "n_samples", "n_outputs", "times", "modalities",
            "words_source", "checkpoint", "checkpoint_phase", "checkpoint_step", "tr_from", "space_note", "backbones",
            "tinytribe_version", "git_revision")
    rows = [[html.escape(k.replace("_", " ")), html.escape(str(metadata[k]))] for k in keys if k in metadata]
    images = "".join(_file_img(Path(f), t) for t, f in pictures if Path(f).suffix.lower() in (".png", ".gif")
                     and Path(f).is_file())
    title = f"Tiny-TRIBE prediction: {metadata.get('stimulus', '')}"
    page = "\n".join([
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>", f"<title>{html.escape(title)}</title>",
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
        f"<p class=meta>{metadata.get('n_samples', '?')} samples of {metadata.get('tr_s', '?')} s "
        f"(sample k covers [k·TR, (k+1)·TR) of stimulus time), {html.escape(str(metadata.get('space', '')))}, subject "
        f"{html.escape(str(metadata.get('subject', '')))}.</p>",
        "<h2>What was predicted</h2>", _table(["", ""], rows, left=(0, 1)),
        "<h2>Pictures</h2>", images or "<p class=none>no pictures</p>", "</body></html>"])
    return atomic_write(path, lambda f: f.write(page.encode("utf-8")))


def _plain(x):
    """JSON-safe: numpy scalars and arrays to Python, NaN to None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
