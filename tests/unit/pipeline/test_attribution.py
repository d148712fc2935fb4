"""The voting model's map (pipeline/attribution.py): the mechanism on a known function, and
the shipped model on corpus images."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from pipeline.attribution import cells, occlusion_map, view_box
from pipeline.clip import clip_input
from pipeline.heatmap import LEGEND_PX, render_attribution
from pipeline.imaging import neutralise
from pipeline.methods.model import detect_model
from storage.seed import default_model_configuration
from testkit.images import noisy_photo, smooth_scene
from tests.conftest import corpus_dir


def _detail_probability(rows: slice, cols: slice):
    """A 'model' whose P(AI) grows with the fine detail in one region of its view only."""
    def probability(views: np.ndarray) -> float:
        region = views[0, :, rows, cols]
        detail = float(np.abs(np.diff(region, axis=2)).mean())
        return 1.0 / (1.0 + math.exp(-(10 * detail - 2)))
    return probability


def test_the_map_finds_the_region_the_model_reads():
    view = clip_input(noisy_photo(rows=224, cols=224, sigma=12.0))
    probability = _detail_probability(slice(150, 224), slice(0, 74))  # bottom-left cell
    out = occlusion_map(view, probability, grid=3)
    delta = np.asarray(out["delta_log_odds"])
    assert delta.shape == (3, 3) and out["kind"] == "occlusion"
    assert int(np.argmax(delta)) == 6 and delta[2, 0] > 0.5  # blurring it lowers P(AI)
    assert np.abs(np.delete(delta.ravel(), 6)).max() < 0.05 * delta[2, 0]
    assert out["cpu_seconds"] >= 0


def test_cells_tile_the_view_exactly():
    boxes = cells(3)
    assert len(boxes) == 9 and boxes[0][:2] == (0, 75) and boxes[-1][1] == 224
    covered = np.zeros((224, 224), int)
    for r0, r1, c0, c1 in boxes:
        covered[r0:r1, c0:c1] += 1
    assert (covered == 1).all()


@pytest.mark.parametrize(("shape", "box"), [
    ((600, 800), {"x": 100, "y": 0, "width": 600, "height": 600}),
    ((3000, 4000), {"x": 1488, "y": 988, "width": 1024, "height": 1024}),
    ((1200, 500), {"x": 0, "y": 350, "width": 500, "height": 500}),
])
def test_view_box_is_the_centre_square_the_model_saw(shape, box):
    assert view_box(shape, 1024) == box


def test_the_rendered_map_has_a_legend_and_dims_what_the_model_did_not_see():
    rgb = smooth_scene(rows=120, cols=200)
    delta = np.array([[2.0, 0, 0], [0, 0, 0], [0, 0, -2.0]])
    png = render_attribution(delta, rgb, {"x": 40, "y": 0, "width": 120, "height": 120})
    out = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert out.shape == (120 + LEGEND_PX, 200, 3)
    legend = out[122:130, 4:196]
    assert (legend[:, 0, 2] > legend[:, 0, 0]).all()  # blue end ...
    assert (legend[:, -1, 0] > legend[:, -1, 2]).all()  # ... red end
    top_left, bottom_right = out[10, 50], out[110, 150]
    assert top_left[0] > top_left[2] + 40 and bottom_right[2] > bottom_right[0] + 40
    # Washed out outside the model's view: less contrast than the picture there.
    assert out[:120, :30].std() < 0.5 * rgb[:, :30].std()


def _model(path) -> tuple[float, np.ndarray]:
    params = default_model_configuration().parameters.model_dump()
    rgb = np.asarray(Image.open(path).convert("RGB"))
    r = detect_model(neutralise(rgb), params, heatmap=True)
    return r.details["raw_probability"], np.asarray(r.details["attribution"]["delta_log_odds"])


@pytest.mark.slow
def test_on_an_ai_image_the_map_varies_and_leans_to_ai():
    name = "CompVis__stable-diffusion__assets_stable-samples_img2img_upscaling-out.png"
    path = corpus_dir("ai") / name
    if not path.is_file():
        pytest.skip(f"{name} not in the corpus")
    p, delta = _model(path)
    assert p > 0.9  # the model says AI ...
    assert delta.std() > 0.1  # ... the map is not uniform ...
    assert delta.mean() > 0  # ... and on the whole its detail pulls towards AI


@pytest.mark.slow
def test_on_a_composite_the_ai_side_pulls_towards_ai():
    """Left third from an AI image, right third from a camera photo: the map's left column
    pulls more towards AI than its right column."""
    ai = corpus_dir("ai") / "Kwai-Kolors__Kolors__controlnet_outputs_Canny_dog.jpg"
    real = corpus_dir("real") / "drewnoakes__metadata-extractor-i__jpg_Sony_DigitalMavica.jpg"
    if not (ai.is_file() and real.is_file()):
        pytest.skip("composite sources not in the corpus")
    a = Image.open(ai).convert("RGB").resize((336, 336))
    b = Image.open(real).convert("RGB").resize((336, 336))
    canvas = Image.new("RGB", (336, 336))
    canvas.paste(a.crop((112, 0, 280, 336)), (0, 0))
    canvas.paste(b.crop((56, 0, 224, 336)), (168, 0))
    buf = io.BytesIO()
    canvas.save(buf, "PNG")
    _, delta = _model(io.BytesIO(buf.getvalue()))
    assert delta[:, 0].mean() > delta[:, 2].mean()
