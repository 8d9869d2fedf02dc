"""Real pods: containerd over the CRI v1 API.

``provider`` is the CRI provider (``CriProvider``, and ``start_cri_provider``
for ``nodeless up``): a kubelet's work for every instance. It builds on
``containerd`` (runs and configures the containerd Nodeless manages),
``clients`` (the async CRI client; ``runtime_pb2`` holds the CRI messages,
generated from ``runtime.proto`` by scripts/generate-cri.sh), ``podconfigs``
(pod specs as CRI configs), ``imagerefs`` and ``registryauth`` (image
references, pull policies, pull-secret credentials), ``backoffs`` (crash-loop
and image-pull back-off), ``logfiles`` (CRI log files read back),
``cgroups`` (pod-level cgroups), ``sandboximages`` (the pause image and
test images built from the host's busybox) and ``registrypush`` (pushing
those to a local registry).
"""
