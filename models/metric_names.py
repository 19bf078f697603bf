"""The names of the scores models/metrics.py computes for a set of samples, in the order tables
show them: the one list that results rows, curves and reports take their metric columns from.

Apart from metrics.py, which needs torch, so that reading a run's tables (sweep/record/,
`gansweep status`) never imports it: 3.5 s of CPU on this machine. (`gansweep report` still does,
through the network classes of models/archs.py.)
"""

SCORE_KEYS = ("i_prime", "inception_score", "fid", "classes_covered", "kl_uniform", "digit_share")
