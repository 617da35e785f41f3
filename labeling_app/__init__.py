"""The Gradio apps: the labeling page (`app`, `annotator_page`, `demonstrations`) and the operator console
(`operator`), each its own app, mounted on one server with shared logins (`server`, `auth`); role checks on
the server for every event."""

from labeling_app.app import build_app
from labeling_app.auth import ensure_first_operator
from labeling_app.server import ServedApp, serve
from labeling_app.services import AppServices, PoolTopper

__all__ = ["AppServices", "PoolTopper", "ServedApp", "build_app", "ensure_first_operator", "serve"]
