"""The one compiled part: the WAT record scan of ingestion (metaclip_tasks/_watscan.c); the rest of
the project's metadata is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("metaclip_tasks._watscan", ["metaclip_tasks/_watscan.c"], extra_compile_args=["-O2"])])
