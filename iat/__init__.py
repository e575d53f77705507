"""IAT core library: instance-as-token sequence modeling (torch, numpy, pandas, pyarrow only)."""

__version__ = "0.1.0"
