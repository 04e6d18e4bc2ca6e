"""Read what a run's ``training.log`` says."""
import re

PROGRESS = re.compile(r"epoch \d+ \[\d+/\d+\]\s+(.*)\s+ETA")


def logged_components(log: str) -> set:
    """Loss component names on the training progress lines (``epoch 0 [4/4]  l1 47.09  conr 29.15  total … ETA``),
    without ``total``."""
    names = set()
    for line in log.splitlines():
        match = PROGRESS.search(line)
        if match:
            names |= set(match.group(1).split()[0::2])
    return names - {"total"}
