"""HTML pages (Jinja2 + htmx)."""
