"""Example webhook bodies for ``sentry-bridge send --example``."""
