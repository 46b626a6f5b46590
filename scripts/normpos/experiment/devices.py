"""Which GPU a job of a sweep trains on."""

from typing import Sequence


def gpu_for_job(gpu_ids: Sequence[int], job_num: int):
    """``run.gpu_ids`` given: job k trains on gpu_ids[k mod n]; else None (the job sees every GPU)."""
    if gpu_ids:
        return gpu_ids[job_num % len(gpu_ids)]
    return None
