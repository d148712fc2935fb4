"""Fitted ensemble weights, and the model method's new description (the CLIP probe).

scripts/train_model.py fits the weights by stacking the methods' held-out log-odds
(leave-one-source-out); pipeline/assets/ensemble.json holds the same fit with its intercept
and thresholds, and a test keeps the two equal. A weight of 0 keeps a method as evidence
and pictures only. exif votes only through declared provenance (see ensemble.json).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

WEIGHTS = {'exif': 0.0, 'model': 0.98, 'prnu': 0.0, 'texture': 0.0, 'ela': 0.0}
PREVIOUS = {"exif": 1.00, "prnu": 0.60, "ela": 0.25, "texture": 0.60, "model": 0.80}
MODEL_DESCRIPTION = "Linear probe on frozen CLIP ViT-B/16 features (block 5), ONNX"
PREVIOUS_MODEL_DESCRIPTION = "ONNX classifier on format-neutral forensic features"

_methods = sa.table("detection_methods", sa.column("method_name", sa.String),
                    sa.column("description", sa.Text), sa.column("weight", sa.Numeric(3, 2)))


def _set(weights: dict, description: str) -> None:
    for name, weight in weights.items():
        op.execute(_methods.update().where(_methods.c.method_name == name)
                   .values(weight=weight))
    op.execute(_methods.update().where(_methods.c.method_name == "model")
               .values(description=description))


def upgrade() -> None:
    _set(WEIGHTS, MODEL_DESCRIPTION)


def downgrade() -> None:
    _set(PREVIOUS, PREVIOUS_MODEL_DESCRIPTION)
