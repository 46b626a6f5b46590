"""The paper's sec. 3.2 and sec. 4 trained to convergence (``make reproduce-multi30k PRESET=cpu``; issue 25).

``plan`` (presets, runs, the projected time), ``runner`` (the sweep's runner on the frontier's pool, progress),
``report`` and ``crosscheck`` (the results folder), ``cli`` (the command). The convergence rule itself is
``normpos.experiment.convergence``, applied while a run trains (``normpos.experiment.watch``).
"""
