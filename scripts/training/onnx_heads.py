"""Small ONNX graphs for linear heads: standardise, linear, optional Platt scaling, sigmoid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Deferred imports: heavy libraries (onnx, onnxruntime, scikit-learn, the clients) load only in
# the mode or child process that uses them.


def logistic_head(mean, scale, coef, intercept: float, *, path: Path, name: str, doc: str,
                  platt: tuple[float, float] = (1.0, 0.0)) -> None:
    """P(AI) = sigmoid(a · (coef · (x − mean) / scale + intercept) + b), input ``features``.

    Standardisation and Platt scaling are folded into one weight vector and one bias, so the
    graph is a MatMul, an Add and a Sigmoid.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    a, b = platt
    w = a * np.asarray(coef, np.float64) / np.asarray(scale, np.float64)
    bias = a * (intercept - float(np.dot(w / a, mean))) + b if a else b
    n = w.size
    inits = [numpy_helper.from_array(w.reshape(n, 1).astype(np.float32), "weight"),
             numpy_helper.from_array(np.array([bias], np.float32), "bias")]
    nodes = [helper.make_node("MatMul", ["features", "weight"], ["linear"]),
             helper.make_node("Add", ["linear", "bias"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["probability"])]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 1])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="skygate scripts/train_model.py")
    model.ir_version = 8
    model.doc_string = doc
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
