"""QMoE (Frantar & Alistarh 2023, arXiv 2310.16795): a mixture-of-experts model compressed below
one bit per parameter.

* ``algorithm`` -- the model level: QMoE's calibration protocol and GPTQ on every expert matrix,
  ternary (or 2-bit), the rest of the model left as it is (``compress``);
* ``batched`` -- GPTQ on a stack of experts of one shape at once (QMoE's batched execution),
  through the one column sweep (``compress.obs.column_sweep``);
* ``coding`` -- the codec: ternary codes in pairs, a dictionary of pair sequences, a row's
  codewords (our compact variable-length code);
* ``stream`` -- the container: the bytes of an encoded matrix (header, row offsets, codewords),
  decoded bit-exact;
* ``paper`` -- QMoE's own storage format (its fixed 2^16-entry dictionary, 64 bits of row
  metadata) counted to the bit, and the entropy limit.
"""
