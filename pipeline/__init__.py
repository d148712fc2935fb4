"""The science, pure: decoding, the five detection methods, heatmap and ensemble.

Nothing here knows about Celery or databases; every function takes bytes or arrays.
"""
