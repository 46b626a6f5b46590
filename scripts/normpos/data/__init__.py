"""Data preparation for the Xiong et al. 2020 reproduction (IWSLT14 De-En, WMT14 En-De, Multi30k).

Each dataset is prepared with the steps of the community recipe it is compared against (fairseq's
``examples/translation/prepare-iwslt14.sh`` and ``prepare-wmt14en2de.sh --icml17``), using the libraries
those scripts wrap (sacremoses for the Moses perl scripts, subword-nmt, sentencepiece, fairseq-preprocess).
Entry point: ``python -m normpos.data prepare {iwslt14,wmt14,multi30k}``; see data/README.md.

One job per module: ``download`` (sources, identities, safe extraction), ``files`` (atomic writes, text
I/O, hashes), ``sgm`` (segments out of sgm/xml), ``tokenize`` (Moses, parallel and streaming), ``clean``
(clean-corpus-n), ``subword`` (BPE / sentencepiece), ``binarize`` (fairseq-preprocess), ``manifest``
(what a prepared folder holds and when it may be reused), ``prepare`` (the shared driver), one module per
dataset, ``bench`` (throughput benchmark) and ``__main__`` (the command line).
"""

from normpos.data.errors import DataError

__all__ = ["DataError"]
