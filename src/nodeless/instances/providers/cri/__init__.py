"""Real pods: containerd over the CRI v1 API.

``containerd`` runs and configures the containerd Nodeless manages,
``sandboximages`` builds the images it needs (the pause image) from the host's
busybox, ``clients`` is the async CRI client, and ``runtime_pb2`` holds the CRI
messages, generated from ``runtime.proto`` by scripts/generate-cri.sh.
"""
