"""Push a Tiny-TRIBE notebook to Kaggle as a kernel, with its parameters filled in.

    tinytribe kaggle push 02_teacher_inference --user ana \
        --set sync_remote=rclone:gdrive:tinytribe/teacher \
        --set tinytribe_source="tinytribe @ git+https://github.com/ana/tiny-tribe@v0.1.0"

(``python kaggle/push.py ...`` from a clone is the same command.) For each kernel,
``kaggle/kernels/<notebook>/`` (shipped inside the wheel too: ``tinytribe.resources``) holds ``kernel-metadata.json`` (Kaggle's format; ``code_file``
points at the notebook in ``notebooks/``) and ``parameters.json`` (the notebook parameters a Kaggle run
needs). Kaggle runs a notebook as it is, without papermill, so this script stages a copy with the
parameters injected as papermill would (a cell tagged ``injected-parameters`` after the ``parameters``
cell), fills in ``YOUR_KAGGLE_USERNAME``, refuses placeholders left unset, and calls the official CLI:
``kaggle kernels push -p <staging folder>``. ``--dry-run`` stages and prints the command without pushing.

Needs ``pip install kaggle papermill`` and a Kaggle API token (``~/.kaggle/kaggle.json`` or the
``KAGGLE_USERNAME`` / ``KAGGLE_KEY`` environment variables).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

KERNELS: Path | None = None   # None: the shipped kernels (tinytribe.resources.kernels_dir()); tests point it elsewhere
USER_PLACEHOLDER = "YOUR_KAGGLE_USERNAME"
REQUIRED_FIELDS = ("id", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu",
                   "enable_internet", "dataset_sources")
GPU_SHAPES = ("NvidiaTeslaT4", "NvidiaTeslaP100")   # the free tier's GPUs (T4: no bf16, so fp16 training)
PLACEHOLDER = re.compile(r"YOUR_[A-Z_]+|^REQUIRED$")
WHY_REQUIRED = {"sync_remote": "a scheduled Kaggle run starts with an empty /kaggle/working, so without a "
                               "remote every run would start the job over"}


class PushError(RuntimeError):
    pass


def kernels_dir() -> Path:
    from tinytribe.resources import kernels_dir as shipped

    return KERNELS if KERNELS is not None else shipped()


def kernel_names() -> list[str]:
    return sorted(p.name for p in kernels_dir().iterdir() if (p / "kernel-metadata.json").is_file())


def load_kernel(name: str) -> tuple[dict, dict, Path]:
    """Metadata, parameters and notebook path of a kernel, validated."""
    folder = kernels_dir() / name
    if not (folder / "kernel-metadata.json").is_file():
        raise PushError(f"no kernel {name!r} (known: {', '.join(kernel_names())})")
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    params = json.loads((folder / "parameters.json").read_text()) if (folder / "parameters.json").is_file() else {}
    missing = [k for k in REQUIRED_FIELDS if k not in meta]
    if missing:
        raise PushError(f"{folder}/kernel-metadata.json: missing {', '.join(missing)}")
    notebook = (folder / meta["code_file"]).resolve()
    if not notebook.is_file():
        raise PushError(f"{folder}/kernel-metadata.json: code_file {meta['code_file']} does not exist")
    slug = meta["id"].split("/", 1)[-1]
    if slug != meta["title"].lower().replace(" ", "-"):
        raise PushError(f"{folder}/kernel-metadata.json: Kaggle derives the slug from the title: id must end in "
                        f"{meta['title'].lower().replace(' ', '-')!r}, not {slug!r}")
    for key in ("is_private", "enable_gpu", "enable_internet"):
        if meta[key] not in ("true", "false"):
            raise PushError(f"{folder}/kernel-metadata.json: {key} must be \"true\" or \"false\"")
    shape = meta.get("machine_shape")
    if meta["enable_gpu"] == "true" and shape not in GPU_SHAPES:
        raise PushError(f"{folder}/kernel-metadata.json: a GPU kernel names its GPU in machine_shape "
                        f"({' or '.join(GPU_SHAPES)}; the kaggle CLI reads it since 1.8), not {shape!r}")
    if meta["enable_gpu"] == "false" and shape is not None:
        raise PushError(f"{folder}/kernel-metadata.json: machine_shape {shape!r} on a kernel without a GPU")
    return meta, params, notebook


def _fill(value, user: str):
    if isinstance(value, str):
        return value.replace(USER_PLACEHOLDER, user)
    if isinstance(value, list):
        return [_fill(v, user) for v in value]
    return value


def _parse_set(text: str) -> tuple[str, object]:
    from tinytribe.config import ConfigError, parse_assignment

    try:
        return parse_assignment(text, "--set")
    except ConfigError as e:
        raise PushError(str(e)) from None


def stage(name: str, user: str, overrides: dict, out: Path) -> tuple[dict, dict]:
    """Write ``kernel-metadata.json`` and the parameterised notebook into ``out``."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    meta, params, notebook = load_kernel(name)
    meta = {k: _fill(v, user) for k, v in meta.items()}
    params = {k: _fill(v, user) for k, v in params.items()}
    for key, value in overrides.items():
        if key not in params:
            known = ", ".join(sorted(params))
            raise PushError(f"--set {key}: not a Kaggle parameter of {name} (known: {known})")
        params[key] = value
    unset = [k for k, v in params.items() if isinstance(v, str) and PLACEHOLDER.search(v)]
    unset += [f"metadata {k}" for k, v in meta.items() if PLACEHOLDER.search(json.dumps(v))]
    if unset:
        why = "; ".join(f"{k}: {WHY_REQUIRED[k]}" for k in unset if k in WHY_REQUIRED)
        raise PushError(f"{name}: set {', '.join(unset)} (--set key=value, --user)" + (f" -- {why}" if why else ""))
    nb = load_notebook_node(str(notebook))
    nb = parameterize_notebook(nb, params, kernel_name="python3", language="python")
    out.mkdir(parents=True, exist_ok=True)
    meta["code_file"] = notebook.name
    nbformat.write(nb, out / notebook.name)
    (out / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta, params


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("kernel", nargs="?", help=f"one of: {', '.join(kernel_names())}")
    ap.add_argument("--user", default=os.environ.get("KAGGLE_USERNAME"), help="your Kaggle username")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="notebook parameter key=value")
    ap.add_argument("--stage-dir", help="stage here instead of a temporary folder (kept)")
    ap.add_argument("--dry-run", action="store_true", help="stage and print the command; do not push")
    args = ap.parse_args(argv)
    try:
        if not args.kernel:
            raise PushError(f"name a kernel: {', '.join(kernel_names())}")
        if not args.user:
            raise PushError("give --user or set KAGGLE_USERNAME")
        overrides = dict(_parse_set(s) for s in args.sets)
        out = Path(args.stage_dir) if args.stage_dir else Path(tempfile.mkdtemp(prefix="tinytribe-kaggle-"))
        meta, params = stage(args.kernel, args.user, overrides, out)
        cmd = ["kaggle", "kernels", "push", "-p", str(out)]
        print(f"staged {meta['id']} (GPU {meta['enable_gpu']}, datasets {meta['dataset_sources'] or 'none'}) "
              f"in {out} with parameters {json.dumps(params)}")
        if args.dry_run:
            print("dry run: " + " ".join(cmd))
            return 0
        if shutil.which("kaggle") is None:
            raise PushError("the kaggle CLI is not installed: pip install kaggle")
        done = subprocess.run(cmd)
        if not args.stage_dir:
            shutil.rmtree(out, ignore_errors=True)
        return done.returncode
    except PushError as e:
        print(f"push: {e}", file=sys.stderr)
        return 2
