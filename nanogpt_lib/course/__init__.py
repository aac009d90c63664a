"""The course's own code, kept apart from the library it teaches.

``exercises/`` holds each chapter's checks and the guard that switches library functions off while an answer
runs; ``explorers/`` the attention, tokenizer and schedule explorers; ``diagrams/`` the chapters' pictures;
``widgets.py`` the sampler widget. This package imports the library; no module outside it imports this one
(tests/test_layout.py checks both directions).
"""
