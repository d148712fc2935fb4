"""Helpers the tests and the benchmark scripts share: image builders (``testkit.images``) and
the fault rig's private servers (``testkit.faultrig``). Never imported by the product; never
imports ``tests`` or ``scripts`` (tests/unit/test_layers.py)."""
