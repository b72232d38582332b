"""Inference: generation with and without KV cache, batching, attention kernels, static cache
and torch.compile, quantized weights, and the batch-1 bandwidth roofline (``decoding``)."""
