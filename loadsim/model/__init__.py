"""The Gmail-send outcome model: what happens to each send, sampled with numpy in bulk."""
