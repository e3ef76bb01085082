"""Tiny-TRIBE: a small, fast student of TRIBE v2 that predicts cortical fMRI responses to video.

The package does nothing at import time; import the submodule you need (``tinytribe.manifest``,
``tinytribe.budget``, ...).
"""

__version__ = "0.1.0"
