"""reslab: a laboratory for residual networks (He et al. 2016)."""

__version__ = "0.1.0"
