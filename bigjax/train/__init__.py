"""The trainer: state, pure steps, optimiser, sharding, checkpoints, the loop."""
