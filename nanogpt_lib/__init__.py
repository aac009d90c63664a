"""nanogpt_lib: the library behind the nanogpt workbook notebooks."""

__version__ = "0.1.0"
