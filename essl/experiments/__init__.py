"""Experiment drivers: many runs trained, evaluated and compared by one command.

- :mod:`~essl.experiments.lifecycle`  create, continue, reuse or refuse a run folder (one rule for all drivers)
- :mod:`~essl.experiments.demo`       ``essl demo``: SimCLR vs E-SimCLR on MNIST-5k
- :mod:`~essl.experiments.sweep`      ``essl sweep``: the invariance-vs-equivariance transformation sweep
- :mod:`~essl.experiments.photonics`  ``essl phc experiment``: the photonics table of the paper
"""
