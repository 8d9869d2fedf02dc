"""Networking: Service virtual IPs (the service proxy), cluster DNS and the L7
ingress gateway. Every part is a client of the API, like the controllers."""
