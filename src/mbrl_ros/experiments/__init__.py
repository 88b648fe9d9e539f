"""Offline experiment drivers on the simulated arm (pure core): the lecture's MBRL versions
compared on the same seeds and data, and the local-model GPS loop for peg insertion."""
