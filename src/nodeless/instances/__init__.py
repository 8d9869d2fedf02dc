"""The elastic-container-instance layer: instance lifecycle, pod status, providers."""
