"""The README's adapter-loading example is the code the acceptance tests run (tests/helpers/load_adapter.py)."""
from __future__ import annotations

import pytest

from tests.helpers.load_adapter import README_SNIPPET
from tests.helpers.trainer import REPO_ROOT

pytestmark = pytest.mark.unit


def test_the_readme_shows_the_loading_example_the_tests_run_verbatim() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```python\n{README_SNIPPET}```" in readme
