"""The web pages: HTML rendered on the server (Jinja2, autoescaped) over the same services
as the REST API; JavaScript only adds live updates."""
