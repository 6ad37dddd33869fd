"""Recipes and executors: declarative curation runs, local (process pool) or on Ray."""
from .recipe import Input, Output, Recipe, load_recipe
from .local import RunResult, run

__all__ = ["Input", "Output", "Recipe", "RunResult", "load_recipe", "run"]
