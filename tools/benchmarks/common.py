"""Shared timing helper of the benchmark scripts."""
import time

import torch


def timed(fns: dict, repeats: int, device: torch.device) -> dict:
    """Best (smallest) seconds of each ``fn()`` over ``repeats`` rounds after one warm-up; the functions take turns
    within each round, so that varying load from other processes affects all of them alike."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    best = {}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            if r:  # round 0 is the warm-up
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    return best
