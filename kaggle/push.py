#!/usr/bin/env python3
"""From a clone: ``python kaggle/push.py 02_teacher_inference --user <you> ...``, the same as
``tinytribe kaggle push ...`` (``tinytribe/kaggle_push.py`` has the code and the documentation)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the checkout's tinytribe, installed or not

from tinytribe.kaggle_push import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="kaggle/push.py"))
