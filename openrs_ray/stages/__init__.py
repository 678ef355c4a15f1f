"""Stage drivers: rl (orchestrator), sft/kd (supervised) and kd_seq's teacher pass (teacher)."""
