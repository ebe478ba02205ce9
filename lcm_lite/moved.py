"""Old module paths, from before the package was split into layers, still import: each is the
module that took its place, with a DeprecationWarning that names it (docs: "Changelog")."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "lcm_lite.bench": "lcm_lite.cli.bench",
    "lcm_lite.blob_cache": "lcm_lite.runtime.blob_cache",
    "lcm_lite.classifier_free": "lcm_lite.sampling.classifier_free",
    "lcm_lite.compiler": "lcm_lite.runtime.compiler",
    "lcm_lite.configs": "lcm_lite.models.configs",
    "lcm_lite.folder": "lcm_lite.models.folder",
    "lcm_lite.guidance": "lcm_lite.sampling.guidance_embedding",
    "lcm_lite.hub": "lcm_lite.models.hub",
    "lcm_lite.info": "lcm_lite.cli.info",
    "lcm_lite.jobs": "lcm_lite.server.jobs",
    "lcm_lite.lora": "lcm_lite.models.lora",
    "lcm_lite.networks": "lcm_lite.models.networks",
    "lcm_lite.options": "lcm_lite.cli.common",
    "lcm_lite.pictures": "lcm_lite.images.preprocess",
    "lcm_lite.remake": "lcm_lite.cli.remake",
    "lcm_lite.results": "lcm_lite.pipeline.results",
    "lcm_lite.scheduler": "lcm_lite.sampling.scheduler",
    "lcm_lite.tiny_vae": "lcm_lite.models.vae",
    "lcm_lite.tokenizer": "lcm_lite.models.tokenizer",
    "lcm_lite.torch_rng": "lcm_lite.sampling.torch_rng",
    "lcm_lite.server.command": "lcm_lite.cli.serve",
    "lcm_lite.server.models": "lcm_lite.server.schemas",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A finder for ``MOVED``'s old names: importing one gives the new module itself."""

    def find_spec(self, name: str, path: object, target: object = None):
        if name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        """The import system's default (empty) module, replaced in ``exec_module``."""

    def exec_module(self, module: ModuleType) -> None:
        """Put the new module in the old name's place (the import system returns what
        ``sys.modules`` then holds)."""
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} is now {new}", DeprecationWarning, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
