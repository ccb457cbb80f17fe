"""Build hook for the optional C accelerator; all metadata lives in pyproject.toml.

The extension is optional: where no C compiler is available the build goes on
without it and tokenwire uses its pure-Python decoder (same results, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("tokenwire._speedups", ["src/tokenwire/_speedups.c"], optional=True),
    ]
)
