"""The web pages' templates (Jinja2), installed as the package data opus.templates."""
