"""Build step only: everything else is in pyproject.toml.

The notebooks and the Kaggle kernel metadata live at the top of the repository (the design card's
layout), outside the package. A wheel ships copies of them under ``tinytribe/_bundled/`` so that an
installed ``tinytribe notebooks`` and ``tinytribe kaggle push`` find them (``tinytribe/resources.py``).
An editable install reads the source tree and copies nothing.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = {"notebooks": ("*.ipynb", "*.py"), "kaggle/kernels": ("*/*.json",)}


class BuildPyWithProjectFiles(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        dest = Path(self.build_lib) / "tinytribe" / "_bundled"
        shutil.rmtree(dest, ignore_errors=True)   # a stale build folder must not ship deleted notebooks
        for folder, patterns in SHIPPED.items():
            files = [p for pattern in patterns for p in sorted((ROOT / folder).glob(pattern))]
            if not files:
                raise FileNotFoundError(f"{ROOT / folder}: nothing to ship (a source tree without it?)")
            for src in files:
                target = dest / folder / src.relative_to(ROOT / folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)


setup(cmdclass={"build_py": BuildPyWithProjectFiles})
