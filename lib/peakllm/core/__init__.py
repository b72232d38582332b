"""The measuring core: where files live, argument checks, units, the device and its roofline,
timers, memory accounting, records, published reference numbers and perplexity.

Nothing here knows a compression method or a training recipe; every other subpackage measures
through it. Dependencies point one way: paths, checks, units <- hardware <- timing, roofline
<- memory, records, perplexity.
"""
