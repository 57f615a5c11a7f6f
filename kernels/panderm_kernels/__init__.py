"""panderm_kernels: hot-path ops with pure-torch references (the spec) and Triton kernels."""
