"""One compression core, three papers.

``obs`` holds the Optimal Brain Surgeon column sweep (``ColumnSweep``: running Hessian, dead
inputs, dampening, Cholesky of H⁻¹, blocked OBS updates with lazy batches). Over it, as
siblings:

* ``gptq.GPTQ``           -- the sweep with a quantization grid (``quant``);
* ``sparsegpt.SparseGPT`` -- the sweep with adaptive mask selection (and optionally a grid);
* ``qmoe``                -- GPTQ on every expert matrix, ternary, and a dictionary code
  (``ternary_coding``) that stores it below one bit per weight.

``sequential`` runs any of them block by block through a Hugging Face model; ``driver`` is the
one entry point that owns the data-free methods (magnitude, RTN) and the fallback for a layer
no calibration token reached. ``baselines`` holds magnitude and Wanda, ``experts`` the fused
expert layout, ``formats`` the storage formats of sparse and quantized weights.
"""
