"""nanogpt_lib: the library behind the nanogpt workbook notebooks."""

DIST_NAME = "nanogpt-workbook"  # the name pip knows it by (pyproject.toml; a test keeps the two in step)
__version__ = "0.1.0"
