"""The API page works offline (issue 17, acceptance 7): /docs renders Swagger UI in headless Chromium with
every request to anything but this server blocked, its assets coming from static/vendor."""
from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect


pytestmark = pytest.mark.integration


def test_the_api_docs_render_with_the_network_to_anything_but_the_server_blocked(page: Any, stack: Any) -> None:
    blocked: list[str] = []

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(stack.base_url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Tunedeck")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/jobs").first).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/v1/fine_tuning/jobs").first).to_be_visible()
    assert not blocked, blocked
    assert "cdn" not in page.content().lower()
