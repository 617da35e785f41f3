"""The Gradio labeling app: annotator page and operator tab, with server-side role checks."""

from labeling_app.app import ServedApp, build_app, serve
from labeling_app.auth import ensure_first_operator
from labeling_app.services import AppServices, PoolTopper

__all__ = ["AppServices", "PoolTopper", "ServedApp", "build_app", "ensure_first_operator", "serve"]
