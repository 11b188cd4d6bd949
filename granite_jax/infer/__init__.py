"""Generation: the prefill/decode sampler over the model's KV cache (model/cache.py).

Used by RL rollouts, SFT evaluation, the long-context eval and the curation judge.
"""
