"""The web pages' static files, installed as the package data opus.static."""
