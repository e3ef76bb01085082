"""``tinytribe`` command line: a thin shell over library functions.

    tinytribe manifest build --job teacher --chunk-s 150 --out manifests/run.json videos/*.mp4
    tinytribe manifest build-from manifests/diverse_video_15h.json --media media --out runs/teacher.json
    tinytribe manifest summary manifests/run.json
    tinytribe manifest shard manifests/run.json --shards 2 --out-dir manifests/shards
    tinytribe manifest merge manifests/run.json manifests/shards/*.json
    tinytribe manifest retry-failed manifests/run.json
    tinytribe manifest release manifests/run.json --stale
    tinytribe sync restore --remote rclone:gdrive:tinytribe/teacher --run-dir runs/teacher
    tinytribe sync push --remote rclone:gdrive:tinytribe/teacher --run-dir runs/teacher
    tinytribe doctor --run-dir runs/teacher --remote rclone:gdrive:tinytribe/teacher
    tinytribe teacher select runs/features --k 300 --per-cluster 2 --media media --out runs/teacher/manifest.json
    tinytribe teacher import submission.npy --out runs/teacher/algonauts --tr-s 1.49 --teacher-id mine --allow-pickle
    tinytribe teacher storage runs/teacher/manifest.json
    tinytribe predict runs/phase3/checkpoints/best.pt clip.mp4 --out runs/predict --tr-s 1.49 --subject average
    tinytribe report runs/evaluate
    tinytribe plan --hours 15
    tinytribe notebooks 00_setup_and_plan --out runs/notebooks -p chunk_s=6
    tinytribe demo --out runs/demo
    tinytribe kaggle push 02_teacher_inference --user ana --set sync_remote=rclone:gdrive:tinytribe/teacher

Every error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

def _manifest(args: argparse.Namespace) -> int:
    from tinytribe import manifest as mf
    from tinytribe.formats import JobDefinition, Manifest

    def skipped(source: str, error: Exception) -> None:
        print(f"skipped: {error}", file=sys.stderr)

    def unreadable(source: str, error: Exception) -> None:
        print(f"unreadable (recorded as failed): {error}", file=sys.stderr)

    if args.action in ("build", "build-from"):
        out = Path(args.out)
        if out.exists() and not args.force:
            raise ValueError(f"{out}: exists; pass --force to replace it (done items would be lost)")
    if args.action == "build":
        m = mf.build_manifest(args.media, job=args.job, chunk_s=args.chunk_s, max_attempts=args.max_attempts,
                              relative_to=args.relative_to, on_error=unreadable)
        if all(it.status == "failed" for it in m.items):
            raise ValueError(f"{out}: not written, no readable media among {len(args.media)} path(s)")
        m.save(out)
        print(f"{out}: {mf.summarize(m).line()}")
    elif args.action == "build-from":
        m, coverage = mf.build_from_definition(JobDefinition.load(args.definition), args.media, on_error=skipped)
        for row in coverage:
            print(row.line())
        if not m.items:
            raise ValueError(f"{out}: not written, no media of {args.definition} found under {args.media}")
        m.save(out)
        print(f"{out}: {mf.summarize(m).line()}")
    elif args.action == "summary":
        for p in args.paths:
            print(f"{p}: {mf.summarize(Manifest.load(p)).line()}")
    elif args.action == "shard":
        out_dir = Path(args.out_dir)
        src = Path(args.path)
        for s in mf.shard(Manifest.load(src), args.shards):
            path = out_dir / f"{src.stem}.shard{s.shard_index}of{s.shard_count}.json"
            s.save(path)
            print(f"{path}: {mf.summarize(s).line()}")
    elif args.action == "merge":
        merged = mf.merge_files(args.out, args.inputs)
        print(f"{args.out}: {mf.summarize(merged).line()}")
    elif args.action == "retry-failed":
        print(f"{args.path}: {mf.retry_failed(args.path)} failed items back to pending")
    elif args.action == "release":
        ids = mf.release_items(args.path, worker=args.worker, stale=args.stale)
        print(f"{args.path}: {len(ids)} running items back to pending" + (f": {', '.join(ids)}" if ids else ""))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from tinytribe.budget import plan, storage_gb

    for job in ("teacher", "features"):
        print(f"{job} over {args.hours:g} h of stimulus:")
        for row in plan(args.hours, job):
            print(f"  {row['platform']:<22} {row['gpu_hours']:>7.1f} GPU-h  {row['sessions']:>3} sessions  "
                  f"{row['weeks']:>5.2f} weeks  ${row['usd']:.0f}")
    print("storage (fp16): " + ", ".join(f"{k} {v:.2f}" for k, v in storage_gb(args.hours).items()))
    return 0


def _sync(args: argparse.Namespace) -> int:
    from tinytribe.sync import RunSync, open_remote

    sync = RunSync(open_remote(args.remote), args.run_dir)
    if args.action == "round-trip":
        print(f"{sync.remote.description}: 1 KB round trip in {sync.round_trip():.2f} s")
        return 0
    sync.acquire(force=args.force)
    try:
        stats = sync.restore() if args.action == "restore" else sync.push()
        print(f"{args.run_dir}: {stats.line('restored' if args.action == 'restore' else 'pushed')}")
    finally:
        sync.release()
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from tinytribe import doctor
    from tinytribe.budget import SessionBudget
    from tinytribe.sync import RunSync, open_remote

    sync = RunSync(open_remote(args.remote), args.run_dir) if args.remote else None
    ledger = Path(args.run_dir) / "quota_ledger.json"
    doctor.run(run_dir=args.run_dir, budget=SessionBudget.for_platform(), sync=sync,
               ledger_path=ledger if ledger.exists() else None, account=args.account, needs_gpu=args.needs_gpu)
    return 0


def _parse_param(text: str):
    from tinytribe.config import parse_assignment

    return parse_assignment(text, "parameter")


def _teacher(args: argparse.Namespace) -> int:
    from tinytribe import manifest as mf

    if args.action == "select":
        from tinytribe.teacher.diversity import diversity_manifest

        out = Path(args.out)
        if out.exists() and not args.force:
            raise ValueError(f"{out} exists (a running job's manifest?); give --force to replace it")
        files = sorted(Path(args.features).glob("*.npz"))
        if not files:
            raise FileNotFoundError(f"{args.features}: no feature files (*.npz)")
        m, sel = diversity_manifest(files, k=args.k, per_cluster=args.per_cluster, segment_s=args.segment_s,
                                    seed=args.seed, media_root=args.media)
        m.save(out)
        print(sel.report())
        print(f"{out}: {mf.summarize(m).line()}")
    elif args.action == "import":
        from tinytribe.teacher.importing import import_predictions

        m = import_predictions(args.path, args.out, tr_s=args.tr_s, first_bold_s=args.first_bold_s,
                               teacher_id=args.teacher_id, space=args.space, allow_pickle=args.allow_pickle)
        print(f"imported {len(m.items)} episodes into {args.out} ({m.items[0].output} ...)")
    else:
        from tinytribe.teacher.cache import expected_storage, measured_storage

        measured = measured_storage(args.manifest)
        print(measured.line("measured"))
        for space in ("fsaverage5", "fsaverage4", "schaefer-400"):
            print(expected_storage(space).line(f"expected, fp16, {space}"))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from tinytribe.predict import predict_files

    done = predict_files(args.checkpoint, args.inputs, args.out, formats=args.formats.split(","),
                         pictures=not args.no_pictures, movie=None if args.movie == "none" else args.movie,
                         cache_dir=args.cache, tr_s=args.tr_s, subject=args.subject, space=args.space,
                         device=args.device, video_model=args.video_model)
    for stim, paths in done.items():
        print(f"{stim}: {len(paths)} files in {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from tinytribe.eval.report import write_report

    print(f"wrote {write_report(args.run_dir)}")
    return 0


def _notebook_failure(e: BaseException, name: str, copy: Path) -> str | None:
    """One line for a notebook that stopped (None: not a notebook error); the traceback stays in its copy."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    if isinstance(e, PapermillExecutionError):   # the notebook's own one-line error
        why = str(e.evalue).strip().splitlines()[0] if str(e.evalue).strip() else ""
        return f"notebook {name} failed in cell {e.exec_count}: {e.ename}: {why} (traceback in {copy})"
    if isinstance(e, (DeadKernelError, CellTimeoutError)):   # killed for memory, or a cell past the time limit
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"notebook {name} stopped: {type(e).__name__}: {why} (the executed copy is {copy})"
    return None


def _notebooks(args: argparse.Namespace) -> int:
    from tinytribe.pipeline import run_notebook
    from tinytribe.resources import notebooks_dir

    params = dict(_parse_param(p) for p in args.param)
    names = args.names or sorted(p.stem for p in notebooks_dir().glob("*.ipynb"))
    for name in names:
        try:
            out = run_notebook(name, args.out, params)
        except Exception as e:
            line = _notebook_failure(e, name, Path(args.out) / f"{name}.ipynb")
            if line is None:
                raise
            print(f"tinytribe: error: {line}", file=sys.stderr)
            return 2
        print(f"executed {name} -> {out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tinytribe.eval.report import ablation_text
    from tinytribe.pipeline import StepFailed, demo_steps, run_steps

    steps = demo_steps(seed=args.seed, device=args.device, phase1_epochs=args.phase1_epochs, epochs=args.epochs)
    out = Path(args.out)
    print(f"Tiny-TRIBE main job: {len(steps)} notebooks on the embedded demo into {out}/ "
          f"(seed {args.seed}, device {args.device}{'; every step redone' if args.force else ''})", file=sys.stderr)
    try:
        report = run_steps(steps, out, force=args.force)
    except StepFailed as e:
        line = _notebook_failure(e.__cause__, e.step.notebook, e.copy) or f"step {e.step.name}: {e.__cause__}"
        print(f"tinytribe: error: {line}; the same command resumes from there", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ntinytribe: interrupted; the same command resumes from the step it stopped in", file=sys.stderr)
        return 130
    results = out / "evaluate" / "results.json"
    print(ablation_text(json.loads(results.read_text())) if results.is_file() else f"no {results}: nothing to summarise")
    runs = ", ".join(s.outputs[0] for s in steps if s.name.startswith(("03_", "04_", "05_")))
    print(f"\n{report.line()}\n  report       {out / 'evaluate' / 'report.html'}"
          f"\n  notebooks    {out / 'notebooks'}/\n  checkpoints  {out}/{{{runs}}}/checkpoints/"
          f"\n  prediction   {out / 'predict'}/")
    return 0


def _kaggle(args: argparse.Namespace) -> int:
    from tinytribe.kaggle_push import main as push

    return push(args.rest, prog="tinytribe kaggle push")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinytribe", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("manifest", help="build, inspect, shard and merge job manifests")
    msub = m.add_subparsers(dest="action", required=True)
    b = msub.add_parser("build", help="one item per chunk of each media file")
    b.add_argument("media", nargs="+")
    b.add_argument("--job", required=True, help="what the job does, e.g. teacher, features")
    b.add_argument("--chunk-s", type=float, default=150.0)
    b.add_argument("--max-attempts", type=int, default=3)
    b.add_argument("--relative-to", help="store paths relative to this folder")
    b.add_argument("--out", required=True)
    b.add_argument("--force", action="store_true")
    bf = msub.add_parser("build-from", help="a manifest from a job definition in manifests/, for your media")
    bf.add_argument("definition")
    bf.add_argument("--media", required=True, help="folder holding the media (one subfolder per group)")
    bf.add_argument("--out", required=True)
    bf.add_argument("--force", action="store_true")
    s = msub.add_parser("summary", help="done / pending / failed and hours left")
    s.add_argument("paths", nargs="+")
    sh = msub.add_parser("shard", help="split into N shards, one per worker or account")
    sh.add_argument("path")
    sh.add_argument("--shards", type=int, required=True)
    sh.add_argument("--out-dir", required=True)
    mg = msub.add_parser("merge", help="merge shards; done items always stay done")
    mg.add_argument("out")
    mg.add_argument("inputs", nargs="+")
    r = msub.add_parser("retry-failed", help="send failed items back to pending")
    r.add_argument("path")
    rl = msub.add_parser("release", help="send running items of a dead worker back to pending (no attempt counted)")
    rl.add_argument("path")
    who = rl.add_mutually_exclusive_group(required=True)
    who.add_argument("--worker", help="the worker named in the items (host:pid:start)")
    who.add_argument("--stale", action="store_true", help="items whose lease ran out or whose worker here is gone")
    m.set_defaults(func=_manifest)

    pl = sub.add_parser("plan", help="GPU hours, sessions, weeks, cost and storage for a job size")
    pl.add_argument("--hours", type=float, required=True, help="hours of stimulus")
    pl.set_defaults(func=_plan)

    sy = sub.add_parser("sync", help="restore a run folder from its remote, or push it there")
    sy.add_argument("action", choices=["restore", "push", "round-trip"])
    sy.add_argument("--remote", required=True, help="folder:<path>, rclone:<remote>:<folder> or gdrive:<folder id>")
    sy.add_argument("--run-dir", required=True)
    sy.add_argument("--force", action="store_true", help="take the lock even if another session holds it")
    sy.set_defaults(func=_sync)

    dr = sub.add_parser("doctor", help="platform, GPU, disk, secrets, remote and quota checks")
    dr.add_argument("--run-dir", default=".")
    dr.add_argument("--remote")
    dr.add_argument("--account", default="default")
    dr.add_argument("--needs-gpu", action="store_true")
    dr.set_defaults(func=_doctor)

    te = sub.add_parser("teacher", help="choose segments for the teacher, import existing predictions, storage")
    tsub = te.add_subparsers(dest="action", required=True)
    sel = tsub.add_parser("select", help="diversity sampling: k-means on 30 s segments of cached features")
    sel.add_argument("features", help="folder of feature files (notebook 01's stitched *.npz)")
    sel.add_argument("--out", required=True, help="the teacher manifest to write")
    sel.add_argument("--media", help="store sources relative to this media folder")
    sel.add_argument("--k", type=int, default=300, help="number of clusters")
    sel.add_argument("--per-cluster", type=int, default=2, help="segments kept per cluster")
    sel.add_argument("--segment-s", type=float, default=30.0)
    sel.add_argument("--seed", type=int, default=0)
    sel.add_argument("--force", action="store_true", help="replace an existing manifest")
    im = tsub.add_parser("import", help="existing predictions (.npy, .h5, Algonauts dicts) into the teacher cache")
    im.add_argument("path", help="a file or a folder of files")
    im.add_argument("--out", required=True)
    im.add_argument("--tr-s", type=float, required=True, help="seconds between rows (Algonauts 2025: 1.49)")
    im.add_argument("--first-bold-s", type=float, default=0.0, help="BOLD time of row 0 in stimulus seconds")
    im.add_argument("--teacher-id", required=True, help="who made these predictions")
    im.add_argument("--space", help="output space (default: from the number of columns)")
    im.add_argument("--allow-pickle", action="store_true", help="read pickled dicts (only from people you trust)")
    st = tsub.add_parser("storage", help="bytes per hour of stimulus: measured and expected")
    st.add_argument("manifest")
    te.set_defaults(func=_teacher)

    pr = sub.add_parser("predict", help="responses to videos, audio or transcripts: npy, h5, GIFTI, pictures")
    pr.add_argument("checkpoint", help="a student checkpoint (.pt)")
    pr.add_argument("inputs", nargs="+", help="media files, transcripts, or folders of them")
    pr.add_argument("--out", default="runs/predict", help="output folder")
    pr.add_argument("--tr-s", type=float, default=None, help="TR of the output grid (default: the checkpoint's)")
    pr.add_argument("--subject", default=None, help="'average' (default) or one of the checkpoint's subjects")
    pr.add_argument("--space", default=None, help="the checkpoint's space (default) or one it reduces to")
    pr.add_argument("--formats", default="npy,h5,gifti", help="comma-separated: npy, h5, gifti")
    pr.add_argument("--cache", default=None, help="feature cache folder (default OUT/features)")
    pr.add_argument("--movie", default="gif", choices=["gif", "mp4", "none"])
    pr.add_argument("--no-pictures", action="store_true", help="outputs only: no maps, time courses or movie")
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--video-model", default=None, help="video backbone weights (a folder); default the offline copy")
    pr.set_defaults(func=_predict)

    rp = sub.add_parser("report", help="rebuild an evaluation's HTML report from its saved results.json")
    rp.add_argument("run_dir", help="the evaluation's out_dir (notebook 06_evaluate)")
    rp.set_defaults(func=_report)

    nb = sub.add_parser("notebooks", help="execute notebooks with papermill")
    nb.add_argument("names", nargs="*", help="notebook names (default: all, in order)")
    nb.add_argument("--out", default="runs/notebooks", help="folder for the executed copies")
    nb.add_argument("-p", "--param", action="append", default=[], help="key=value (JSON values)")
    nb.set_defaults(func=_notebooks)

    de = sub.add_parser("demo", help="the main job: every notebook on the embedded demo, the ablation, a report")
    de.add_argument("--out", default="runs/demo", help="the output folder (executed notebooks, checkpoints, report)")
    de.add_argument("--force", action="store_true", help="redo every step (default: reuse finished ones)")
    de.add_argument("--seed", type=int, default=0, help="the demo study's and every training run's seed")
    de.add_argument("--device", default="auto", help="cpu, cuda or auto (a GPU when there is one)")
    de.add_argument("--phase1-epochs", type=int, default=3, help="Phase 1's epochs (briefly: the demo is small)")
    de.add_argument("--epochs", type=int, default=30, help="Phase 2's and Phase 3's epochs (their recipes': 10)")
    de.set_defaults(func=_demo)

    kg = sub.add_parser("kaggle", help="push a notebook to Kaggle as a kernel (tinytribe kaggle push --help)")
    ksub = kg.add_subparsers(dest="action", required=True)
    kp = ksub.add_parser("push", add_help=False, help="stage a parameterised notebook and call the Kaggle CLI")
    kp.add_argument("rest", nargs=argparse.REMAINDER)
    kp.set_defaults(func=_kaggle)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["kaggle", "push"]:   # its own parser (and --help): tinytribe/kaggle_push.py
        return _kaggle(argparse.Namespace(rest=argv[2:]))
    args = build_parser().parse_args(argv)
    from tinytribe.config import ConfigError
    from tinytribe.doctor import DoctorError
    from tinytribe.features.decode import MediaError
    from tinytribe.formats import FormatError
    from tinytribe.sync import RemoteError, SyncLockedError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ntinytribe: interrupted", file=sys.stderr)
        return 130
    except (FormatError, ConfigError, MediaError, ValueError, FileNotFoundError, KeyError, RemoteError,
            SyncLockedError, DoctorError) as e:
        print(f"tinytribe: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
