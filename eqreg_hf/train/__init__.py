"""Training with EQ-Reg: the step (once), the Trainer mixin, the Accelerate loop, the cost of a step."""
