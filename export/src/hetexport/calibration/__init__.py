"""Decisions with guarantees, calibrated on labelled held-out images at export: split-conformal
prediction sets, abstention at a stated risk (Learn-then-Test or SGR), and the ATC threshold
for estimating accuracy without labels. The result is the model card's ``calibration``
section (``hetcontract.Calibration``); the gateway applies it to every answer.

Typical usage::

    from hetexport.calibration import calibrate, graph_outputs

    outputs = graph_outputs(Path("model_repo/fashion_het/1/model.onnx"), images)
    section = calibrate(outputs, labels, heteroscedastic=True, label_source="noisy")

Modules: ``conformal`` (set thresholds), ``selective`` (abstention thresholds), ``atc``
(accuracy estimate), ``calibrate`` (the split into tuning and calibration parts, the choices
and the card section), ``labelled_images`` (the held-out images an export is given). The
scores themselves are the contract's (``hetcontract.decision_scores``), shared with the
gateway.
"""

from hetexport.calibration.atc import atc_estimate, atc_threshold
from hetexport.calibration.calibrate import (
    DEFAULT_TUNING_FRACTION,
    CalibrationConfig,
    CalibrationSet,
    calibrate,
    calibrate_graph,
    graph_outputs,
    tuning_split,
)
from hetexport.calibration.labelled_images import LabelledImages, load_labelled_images

__all__ = [
    "DEFAULT_TUNING_FRACTION",
    "CalibrationConfig",
    "CalibrationSet",
    "LabelledImages",
    "calibrate_graph",
    "load_labelled_images",
    "atc_estimate",
    "atc_threshold",
    "calibrate",
    "graph_outputs",
    "tuning_split",
]
