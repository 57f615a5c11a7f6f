"""The ``panderm`` command line: a thin Click layer over the panderm library."""
