"""The real teacher: Meta FAIR's TRIBE v2, run in an isolated virtual environment.

    teacher = TribeV2Teacher()                 # creates ~/.cache/tinytribe/tribev2-env once, starts the worker
    out = teacher.predict(Path("clip.mp4"), 150.0, 300.0)
    teacher.close()

TRIBE v2 is installed from its GitHub repository at a pinned commit (it is not on PyPI) into its own
virtual environment, because its pins (``torch<2.7``, ``numpy==2.2.6``, ``x_transformers==1.27.20``) would
replace the platform's torch. The model runs in :mod:`tinytribe.teacher.tribev2_worker`, a process of
that environment that this class starts and talks to with JSON lines and ``.npz`` files.

Its text extractor, Llama-3.2-3B, is gated on the Hugging Face hub: accept its licence with your
account, then give the token as the secret ``HF_TOKEN`` (Kaggle Secrets, Colab userdata or the
environment). Weights and TRIBE's feature caches go under ``~/.cache`` -- on Kaggle outside the
saved ``/kaggle/working`` folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinytribe.teacher.protocol import TeacherInfo, TeacherOutput

TRIBEV2_COMMIT = "72399081ed3f1040c4d996cefb2864a4c46f5b8e"
TRIBEV2_SOURCE = f"tribev2 @ git+https://github.com/facebookresearch/tribev2@{TRIBEV2_COMMIT}"
DEFAULT_FACTORY = "tribev2.demo_utils:TribeModel.from_pretrained"
WORKER = Path(__file__).with_name("tribev2_worker.py")


class TeacherError(RuntimeError):
    """The teacher process failed; the message is one line naming what and why."""


def default_home() -> Path:
    return Path(os.environ.get("TINYTRIBE_TEACHER_HOME") or Path.home() / ".cache" / "tinytribe")


def ensure_env(env_dir: str | Path | None = None, *, source: str = TRIBEV2_SOURCE, python: str = sys.executable,
               extra: tuple[str, ...] = ()) -> Path:
    """Create (once) a virtual environment holding ``source`` and return its Python.

    The environment is reused while its marker file names the same ``source`` and ``extra``;
    otherwise it is rebuilt. Installing TRIBE v2 downloads its own torch (~1 GB): minutes, once per
    machine (once per session on Kaggle, whose home folder is not kept).
    """
    env_dir = Path(env_dir) if env_dir else default_home() / "tribev2-env"
    env_python = env_dir / "bin" / "python"
    marker = env_dir / "tinytribe-env.json"
    want = {"source": source, "extra": list(extra)}
    if env_python.exists() and marker.exists() and json.loads(marker.read_text()) == want:
        return env_python
    print(f"creating the teacher environment in {env_dir} ({source}); this takes a few minutes", flush=True)
    subprocess.run([python, "-m", "venv", "--clear", str(env_dir)], check=True)
    done = subprocess.run([str(env_python), "-m", "pip", "install", "-q", source, *extra])
    if done.returncode != 0:
        raise TeacherError(f"pip could not install {source} into {env_dir} (exit {done.returncode}; its log is above)")
    marker.write_text(json.dumps(want))
    return env_python


class TribeV2Teacher:
    """TRIBE v2 behind the teacher protocol.

    Args:
        checkpoint: hub id or local folder with ``config.yaml`` and ``best.ckpt``.
        device: ``"auto"``, ``"cuda"`` or ``"cpu"``.
        home: where the environment, TRIBE's feature cache and the events cache live.
        python: the teacher environment's Python; None: :func:`ensure_env` makes one.
        factory: ``module:callable`` that loads the model in the worker (tests point it at a small model).
        factory_kwargs: replaces the default keyword arguments of ``factory``.
    """

    def __init__(self, *, checkpoint: str = "facebook/tribev2", device: str = "auto", home: str | Path | None = None,
                 python: str | Path | None = None, factory: str = DEFAULT_FACTORY,
                 factory_kwargs: dict | None = None, source: str = TRIBEV2_SOURCE):
        from tinytribe.secrets import get_secret

        home = Path(home) if home else default_home()
        python = Path(python) if python else ensure_env(home / "tribev2-env", source=source)
        env = dict(os.environ)
        token = get_secret("HF_TOKEN")
        if token:
            env["HF_TOKEN"] = token
        self._proc = subprocess.Popen([str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, env=env)
        self._tmp = tempfile.TemporaryDirectory(prefix="tinytribe-teacher-")
        kwargs = factory_kwargs if factory_kwargs is not None else {
            "checkpoint_dir": checkpoint, "cache_folder": str(home / "tribev2-cache"), "device": device}
        try:
            meta = self._call({"op": "load", "factory": factory, "kwargs": kwargs,
                               "events_dir": str(home / "tribev2-events")})
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            self._tmp.cleanup()
            raise
        revision = f"tribev2@{TRIBEV2_COMMIT[:12]}"
        if meta.get("checkpoint_sha256"):
            revision += f"+ckpt:{meta['checkpoint_sha256'][:12]}"
        dim = int(meta["activation_dim"])
        self.segment_s = float(meta["segment_s"])
        self.info = TeacherInfo(id=checkpoint, revision=revision, space="fsaverage5", rate_hz=float(meta["rate_hz"]),
                                hrf_offset_s=float(meta["hrf_offset_s"]),
                                activations={"fusion_l4": dim, "fusion_l6": dim})

    def _call(self, request: dict) -> dict:
        if self._proc.poll() is not None:
            raise TeacherError(f"the teacher process has exited (code {self._proc.returncode}); see its log above")
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait()
            raise TeacherError(f"the teacher process died during {request['op']!r} (exit {code}); see its log above")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise TeacherError(f"teacher {request['op']}: {reply['error']}")
        return reply

    def predict(self, media: Path, start_s: float, end_s: float) -> TeacherOutput:
        out = Path(self._tmp.name) / "window.npz"
        self._call({"op": "predict", "media": str(Path(media).resolve()), "start_s": float(start_s),
                    "end_s": float(end_s), "out": str(out)})
        with np.load(out) as z:
            arrays = {k: z[k] for k in z.files}
        events = json.loads(Path(f"{out}.events.json").read_text())
        names = list(self.info.activations)
        return TeacherOutput(predictions=arrays["predictions"], times_s=arrays["times_s"],
                             activations={n: arrays[f"act__{n}"] for n in names},
                             activation_times_s={n: arrays[f"act_times__{n}"] for n in names}, events=events)

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._call({"op": "quit"})
            except (TeacherError, BrokenPipeError, ValueError):
                pass
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._tmp.cleanup()

    def __enter__(self) -> "TribeV2Teacher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
