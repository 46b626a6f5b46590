"""Test-set scoring of the runs: decode with the paper's settings, then tokenized BLEU (fairseq's, what the
IWSLT papers print), sacreBLEU with its signature, and for WMT14 compound-split BLEU, each labelled.

    python -m normpos.scoring RUN_DIR [RUN_DIR ...]
    python -m normpos.scoring --root results/runs/<dataset>/<experiment>
"""
