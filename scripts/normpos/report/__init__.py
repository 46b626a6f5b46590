"""Tables and figures of an experiment, built from the run directories' result files only (never from
training code): ``python -m normpos.report {table,figures} --root RUNS --out OUT``."""
