"""The embedded demo study: real photos and synthetic speech as stimuli, simulated subjects on
fsaverage5 with a known answer, and an imperfect stand-in teacher.

``stimuli.py`` makes the media, ``subjects.py`` simulates the fMRI, ``teacher.py`` is the teacher,
``build.py`` ties them into a study folder (``docs/FORMATS.md`` §4). Nothing in the library
special-cases the demo: it is a study like any other.
"""
