"""Decoding: sampling, the step generator, the RSD loop, single-model baselines and the slow reference."""
