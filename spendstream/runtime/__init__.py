"""Runtimes: the shells that feed the core (stream/) and persist what it returns (warehouse/).

The top layer: runtimes import ``stream`` and ``warehouse``; neither imports a runtime.
"""
