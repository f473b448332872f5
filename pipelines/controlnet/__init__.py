"""ControlNet: model files, the cache of loaded ones, units, preprocessors."""
