"""A tiny student for training tests: every stage of the model, small enough for a step in ~0.1 s."""

TINY = ["model.d_model=32", "model.proj_hidden=64", "model.expert_hidden=64", "model.n_heads=2", "model.n_layers=2",
        "model.local_layers=1", "model.n_experts=4", "model.max_steps=512"]
