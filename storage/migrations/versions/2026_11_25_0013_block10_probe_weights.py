"""Refitted ensemble weights for the block-10 CLIP probe, and the model method's description.

scripts/train_model.py refitted the stack over the methods' held-out log-odds after the
``model`` method moved to a linear SVM probe on block 10 of CLIP ViT-B/16 (features extracted
one image per run, as the product runs them). pipeline/assets/ensemble.json holds the same
fit with its intercept and thresholds; a test keeps the two equal.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

WEIGHTS = {'exif': 0.0, 'model': 1.13, 'prnu': 0.0, 'texture': 0.0, 'ela': 0.0}
PREVIOUS = {"exif": 0.0, "model": 0.98, "prnu": 0.0, "texture": 0.0, "ela": 0.0}
MODEL_DESCRIPTION = "Linear probe on frozen CLIP ViT-B/16 features (block 10), ONNX"
PREVIOUS_MODEL_DESCRIPTION = "Linear probe on frozen CLIP ViT-B/16 features (block 5), ONNX"

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
