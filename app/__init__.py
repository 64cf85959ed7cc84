"""Tunedeck web application: settings, database, API, pages."""
