"""The detection methods, one module each (maths, ``detect_*``, document section, ``METHOD``).

:mod:`pipeline.methods.registry` lists them; :mod:`pipeline.methods.base` defines what a
method is. This package's ``__init__`` imports nothing, so a method module can be imported
on its own.
"""
