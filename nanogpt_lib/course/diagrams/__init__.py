"""Diagrams the chapters draw with matplotlib from the library's real shapes (course code, not the model's).

One module per chapter's picture; each function takes the objects it draws (a config, a model, a batch) and
returns a matplotlib Figure, so a notebook shows it and a test checks its labels without a screen.
"""
