"""Builds the optional C kernel (CPU decoding and log Z); the package metadata lives in setup.cfg.

Without a C compiler the build is skipped with a warning and ``mgkd_spacy.crf`` uses its torch code.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("mgkd_spacy.crf._kernel", ["mgkd_spacy/crf/_kernel.c"], extra_compile_args=["-O3"], libraries=["m"],
                             optional=True)])
