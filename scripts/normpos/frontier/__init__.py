"""The stability frontier (``make frontier``): for every normalization scheme and depth, the largest learning
rate that trains without warm-up, on a log grid, and how it moves with depth next to Theorem 1's gradient slopes.

``plan`` (presets, cells, which run comes next), ``unigram`` (the bar a run must clear), ``classify`` (trains /
stalls / diverges), ``runner`` (the sweep's runner on a pool of workers), ``extract`` (lr*, its band, the
slope), ``theory_link`` (against ``results/theory/schemes``), ``figures`` and ``report`` (the results
folder), ``cli`` (the command).
"""
