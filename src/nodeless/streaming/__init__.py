"""Byte-stream protocols Nodeless speaks to container runtimes.

``spdy`` is SPDY/3.1 and the Kubernetes ``remotecommand`` protocol on top of
it: what a kubelet uses to reach the CRI streaming server (exec, attach) of
containerd. It sits in a layer of its own below everything else (it imports
no other Nodeless package) so that both the API server, which relays
kubectl's sessions, and the instance providers may use it.
"""
