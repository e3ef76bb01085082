"""Studies: loading and validating them (``study.py``), windows for training (``windows.py``), and the
embedded demo study (``demo/``)."""
