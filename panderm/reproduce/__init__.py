"""``panderm reproduce``: the paper's experiments on public data, ours beside the published figures.

* :mod:`panderm.reproduce.benchmarks`: what an experiment is (dataset, protocol, figures);
* :mod:`panderm.reproduce.paper`: the built-in entries, transcribed from the paper;
* :mod:`panderm.reproduce.run`: extraction + release-protocol probe on the user's data;
* :mod:`panderm.reproduce.report`: ``report.md``/``report.json``/``report.png``.
"""
