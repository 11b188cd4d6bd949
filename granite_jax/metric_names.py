"""Names of the metrics the loops log and `plot.py` draws: one list both sides use, so a metric
renamed on one side cannot leave a plot silently missing (tests/rl/test_rl_loop.py and
tests/train/test_tensorboard.py plot real runs' metrics.jsonl). No imports: the plot CLI stays light.
"""

LOSS = "loss"                  # every trainer's step (train/step.py, rl/step.py, the reward model)
LR = "lr"
EVAL_LOSS = "eval_loss"        # held-out loss (train/loop.py, the reward model)
TOKENS_SEEN = "tokens_seen"    # pretraining/SFT records (train/loop.py): the plots' x axis when present
KL = "kl"                      # RL: KL to the reference policy (rl/loss.py)
REWARD_MEAN = "reward_mean"    # RL rollout statistics (rl/rollout.py reward_stats)
ACCURACY = "accuracy"          # RL rollouts; reward-model pair accuracy
RESPONSE_LEN = "response_len"  # RL: mean response length in tokens
EVAL = "eval_"                 # prefix of the held-out versions (RL greedy eval, reward-model pairs)
TIME = "time/"                 # step-time breakdown, seconds per step (train/timing.py): TIME + a part
TIME_PARTS = ("step", "data", "h2d", "ckpt", "eval", "sync", "compile", "other")  # stacked in this order
