"""``panderm serve``: a local web page and HTTP API around a trained classifier.

Import is light; FastAPI is imported when :func:`create_app` runs.
"""

from __future__ import annotations


def create_app(classifier, **kwargs):
    """See :func:`panderm.serve.app.create_app`."""
    from panderm.serve.app import create_app as _create_app

    return _create_app(classifier, **kwargs)


__all__ = ["create_app"]
