"""One compression core, three papers.

``obs`` holds the Optimal Brain Surgeon column sweep (``column_sweep``, for one matrix or a stack;
``ColumnSweep``: running Hessian, dead inputs, dampening, Cholesky of H⁻¹, blocked OBS updates
with lazy batches). Over it, as siblings:

* ``gptq.GPTQ``           -- the sweep with a quantization grid (``quant``);
* ``sparsegpt.SparseGPT`` -- the sweep with adaptive mask selection (and optionally a grid);
* ``qmoe``                -- a package: GPTQ on every expert matrix, ternary (``qmoe.algorithm``,
  batched by shape: ``qmoe.batched``), and a dictionary code that stores it below one bit per
  weight (``qmoe.coding``, its bytes ``qmoe.stream``; QMoE's own format ``qmoe.paper``).

``sequential`` runs any of them block by block through a Hugging Face model; ``driver`` is the
one entry point that owns the data-free methods (magnitude, RTN) and the fallback for a layer
no calibration token reached. ``baselines`` holds magnitude and Wanda, ``experts`` the fused
expert layout, ``formats`` the storage formats of sparse and quantized weights.
"""
