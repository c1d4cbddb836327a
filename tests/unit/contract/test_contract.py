"""The contract package is the single source of truth for tensor names, model card and HTTP
schema; these tests pin it to the design in ARCHITECTURE.md."""

import json

import hetcontract
import pytest
from hetcontract import (
    HEAD_OUTPUTS,
    INPUT_NAME,
    ModelCard,
    OutputName,
    PredictRequest,
    PredictResponse,
    output_spec,
)
from pydantic import ValidationError

ARCHITECTURE_EXAMPLE_ANSWER = {
    "model": {"name": "fashion_het", "version": "1", "num_classes": 10,
              "mc_samples": 1000, "temperature": 1.5},
    "results": [{
        "predictions": [{"class_id": 6, "label": "Shirt", "probability": 0.58},
                        {"class_id": 0, "label": "T-shirt/top", "probability": 0.31}],
        "uncertainty": {
            "predictive_entropy": 0.93, "normalized_entropy": 0.40,
            "expected_entropy": 0.81, "mutual_information": 0.12,
            "latent_correlation": {"class_ids": [6, 0],
                                   "matrix": [[1.0, -0.62], [-0.62, 1.0]]},
            "confusable": [{"class_id": 6, "confused_with": [
                {"class_id": 2, "label": "Pullover", "share": 0.71}]}],
        },
        "prediction_set": {"coverage": 0.9, "classes": [{"class_id": 6, "label": "Shirt"},
                                                        {"class_id": 0, "label": "T-shirt/top"}]},
        "decision": {"accept": False, "risk": 0.05, "delta": 0.1, "score": "max_probability"},
    }],
    "request_id": "abc",
}


def _card(**overrides):
    fields = dict(
        name="m", head="het", num_classes=3, labels=["a", "b", "c"], num_factors=2,
        mc_samples=100, temperature=1.5, top_k=3, num_confusable=2,
        input={"shape": [1, 28, 28], "mean": [0.5], "std": [0.25], "scale": 255.0},
    )
    fields.update(overrides)
    return ModelCard.model_validate(fields)


def test_head_outputs_are_exactly_the_architecture_table_in_order():
    assert [spec.name.value for spec in HEAD_OUTPUTS] == [
        "topk_ids", "topk_probs", "predictive_entropy", "expected_entropy",
        "mutual_information", "topk_correlation", "confusable_ids",
        "confusable_share", "probs",
    ]
    assert INPUT_NAME == "images"


def test_every_output_is_batch_first_with_a_matching_dtype():
    for spec in HEAD_OUTPUTS:
        assert spec.shape[0] == "B"
        triton_dtype = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}[spec.numpy_dtype]
        assert spec.triton_dtype == triton_dtype


def test_output_spec_looks_up_by_name_or_enum_and_refuses_unknown_names():
    assert output_spec("probs").shape == ("B", "K")
    assert output_spec(OutputName.CONFUSABLE_IDS).shape == ("B", "k_max", "m")
    with pytest.raises(KeyError):
        output_spec("logits")


def test_the_architecture_example_answer_parses_and_round_trips():
    answer = PredictResponse.model_validate(ARCHITECTURE_EXAMPLE_ANSWER)
    assert answer.results[0].predictions[0].label == "Shirt"
    assert answer.results[0].uncertainty.confusable[0].confused_with[0].share == 0.71
    assert json.loads(answer.model_dump_json()) == ARCHITECTURE_EXAMPLE_ANSWER


def test_an_answer_of_an_uncalibrated_model_has_no_set_and_no_decision():
    result = dict(ARCHITECTURE_EXAMPLE_ANSWER["results"][0])
    del result["prediction_set"], result["decision"]
    answer = PredictResponse.model_validate({**ARCHITECTURE_EXAMPLE_ANSWER, "results": [result]})
    assert answer.results[0].prediction_set is None and answer.results[0].decision is None


def test_a_request_may_name_a_coverage_and_a_risk():
    request = PredictRequest.model_validate(
        {"inputs": [{"image": "aGk="}], "coverage": 0.95, "risk": 0.02})
    assert (request.coverage, request.risk) == (0.95, 0.02)
    for bad in ({"coverage": 1.0}, {"coverage": 0}, {"risk": -0.1}, {"risk": 1.5}):
        with pytest.raises(ValidationError):
            PredictRequest.model_validate({"inputs": [{"image": "aGk="}], **bad})


def test_predict_request_takes_images_or_tensors_and_refuses_anything_else():
    request = PredictRequest.model_validate(
        {"inputs": [{"image": "aGk="}, {"tensor": [[0.0, 1.0]]}], "top_k": 2})
    assert [type(i).__name__ for i in request.inputs] == ["ImageInput", "TensorInput"]
    for bad in ({"inputs": []}, {"inputs": [{"pixels": "x"}]},
                {"inputs": [{"image": "x"}], "top_k": 0},
                {"inputs": [{"image": "x"}], "extra": 1}):
        with pytest.raises(ValidationError):
            PredictRequest.model_validate(bad)


def test_model_card_round_trips_through_json():
    card = _card()
    assert ModelCard.model_validate_json(card.model_dump_json()) == card


@pytest.mark.parametrize("overrides, problem", [
    ({"labels": ["a", "b"]}, "labels"),
    ({"top_k": 4}, "top_k"),
    ({"num_confusable": 3}, "num_confusable"),
    ({"input": {"shape": [3, 8, 8], "mean": [0.5], "std": [0.2]}}, "mean and std"),
    ({"input": {"shape": [1, 8, 8], "mean": [0.5], "std": [0.0]}}, "positive"),
    ({"head": "mystery"}, "head"),
])
def test_model_card_refuses_inconsistent_cards(overrides, problem):
    with pytest.raises(ValidationError, match=problem):
        _card(**overrides)


def test_all_names_are_exported():
    public = {name for name in dir(hetcontract) if not name.startswith("_")}
    modules = {"api", "calibration", "decision_scores", "errors", "model_card", "outputs",
               "audit", "audit_report", "audit_scoring"}
    assert set(hetcontract.__all__) == public - modules
