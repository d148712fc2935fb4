"""Helpers of scripts/train_model.py (research code: needs the ``train`` extra)."""
