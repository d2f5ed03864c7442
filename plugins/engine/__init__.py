"""Training and sampling: models, rollout engines, policy optimizers, the lm / sft / rl trainers."""
