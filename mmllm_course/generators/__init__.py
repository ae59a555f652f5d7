"""Part 5 of the map, modality generators: conditional diffusion decoders for images and 3-D points.

Filled by the output chapters.
"""
