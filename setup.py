# cffi's setuptools hook reads cffi_modules only from setup(); everything else is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["dataplane/fastpath/_build_ffi.py:ffibuilder"])
