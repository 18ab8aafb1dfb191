"""The base of the tests' fake HTTP servers on loopback (Alertmanager's fault proxy, the
webhook receiver, Sentry's API, the status server).

``BaseHTTPRequestHandler`` writes a response's head and its body in two ``send`` calls on an
unbuffered socket. With Nagle's algorithm on, the body waits for the client to acknowledge
the head, and a client that has nothing to send delays that acknowledgement (Linux: up to
40 ms). Each answer then took 40-50 ms instead of 5 ms, so a bridge posting through the
fault proxy was paced by the proxy, not by itself: the refusals test spent most of its
minute there. ``Handler`` turns Nagle off (TCP_NODELAY), as HTTP servers do.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


class Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # StreamRequestHandler sets TCP_NODELAY on each connection
