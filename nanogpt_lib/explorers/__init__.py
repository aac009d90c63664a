"""Explorers: interactive views of the trained model's insides (attention, tokens, learning-rate schedule).

Each module holds plain drawing functions (testable without widgets, and called by the notebooks headless)
and a small ``explorer(...)`` function that only wires ipywidgets controls to them.
"""
