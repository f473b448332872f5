"""The loaded ControlNets (owned by the PipelineManager): a small LRU cache on the checkpoint's device, with the
registry of files and the preprocessors' annotator weights."""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from .files import ControlNetFile, ControlNetRegistry
from .loading import load_controlnet
from .preprocessors import Annotators

if TYPE_CHECKING:  # pragma: no cover
    from ..core.devices import DevicePolicy
    from ..models.files import ModelPaths

log = logging.getLogger(__name__)


class ControlNetCache:
    """Loaded ControlNets, least recently used dropped first; lives on the device with the checkpoint.

    `loads` counts reads from disk (tests and the benchmark check cache hits)."""

    def __init__(self, paths: ModelPaths, policy: DevicePolicy, config_root: Path, size: int = 3):
        self.registry = ControlNetRegistry(paths)
        self.policy = policy
        self.config_root = Path(config_root)
        self.size = max(1, int(size))
        self.annotators = Annotators(paths.dirs("annotators"), device=policy.device)
        self._cache: OrderedDict[str, object] = OrderedDict()
        self.loads = 0

    def get(self, cf: ControlNetFile):
        key = str(cf.path.resolve())
        model = self._cache.get(key)
        if model is not None:
            self._cache.move_to_end(key)
            return model
        model = load_controlnet(cf, self.registry.arch(cf), config_root=self.config_root, dtype=self.policy.dtype)
        if not self.policy.device.startswith("cpu"):
            model.to(self.policy.device)
        self.loads += 1
        self._cache[key] = model
        while len(self._cache) > self.size:
            old_key, _ = self._cache.popitem(last=False)
            log.info("unloaded ControlNet %s", old_key)
        return model

    def clear(self) -> None:
        self._cache.clear()
        self.annotators.clear()
