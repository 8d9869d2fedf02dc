"""How components below the API speak to it.

``clients`` holds the ``ApiClient`` protocol and its vocabulary,
``httpclients`` the HTTP implementation (``kubeconfigs`` reads its
credentials), ``informers`` the list-and-watch caches, ``workqueues`` the
key queues and ``controllers`` the worker runtime and expectations; all
read time through ``nodeless.clocks`` so tests drive them with a fake clock.
"""
