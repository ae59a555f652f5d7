"""Part 4 of the map, the output side: signal tokens, the output projector, discrete visual tokens.

Filled by the output chapters.
"""
