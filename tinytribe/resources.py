"""Where the project's files that are not Python modules live: the notebooks and the Kaggle kernels.

A wheel carries copies of ``notebooks/`` and ``kaggle/kernels/`` under ``tinytribe/_bundled/``, in the
same layout as the repository, so that a kernel's ``code_file`` (``../../../notebooks/NN.ipynb``) still
resolves (``setup.py`` copies them at build time). A source checkout, the editable install included,
reads the folders beside the package instead.
"""

from __future__ import annotations

from pathlib import Path


def project_dir(name: str) -> Path:
    """``name`` (``"notebooks"``, ``"kaggle/kernels"``) from the installed package, else the source tree."""
    package = Path(__file__).resolve().parent
    bundled = package / "_bundled" / name
    if bundled.is_dir():
        return bundled
    source = package.parent / name
    if (package.parent / "pyproject.toml").is_file() and source.is_dir():
        return source
    raise FileNotFoundError(f"{bundled}: not installed with tinytribe, and {package.parent} is not a source "
                            f"checkout; reinstall tinytribe from a wheel or a clone of the repository")


def notebooks_dir() -> Path:
    return project_dir("notebooks")


def kernels_dir() -> Path:
    return project_dir("kaggle/kernels")
