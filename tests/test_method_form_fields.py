"""The job form's method options come from each method's pydantic model (app/web/method_fields.py)."""
from __future__ import annotations

import pytest

from app.methods.qlora import QloraOptions
from app.web.method_fields import method_config_from_form, option_fields

pytestmark = pytest.mark.unit


def _field(method: str, name: str):  # noqa: ANN202 - a FormField
    return next(f for f in option_fields(method) if f.name == name)


def test_an_optional_choice_is_a_select_whose_first_option_is_the_default() -> None:
    field = _field("qlora", "compute_dtype")
    assert field.kind == "select"
    assert field.choices == ("", "float32", "bfloat16", "float16")
    assert field.default == ""


def test_the_default_option_leaves_the_field_to_the_model_and_a_choice_is_kept() -> None:
    assert "compute_dtype" not in method_config_from_form("qlora", {"compute_dtype": ""})
    assert QloraOptions(**method_config_from_form("qlora", {"compute_dtype": ""})).compute_dtype is None
    assert method_config_from_form("qlora", {"compute_dtype": "bfloat16"})["compute_dtype"] == "bfloat16"
