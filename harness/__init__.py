"""Boot a matrix of real kernels in QEMU and test Tetragon TracingPolicies in each."""

__version__ = "0.1.0"
