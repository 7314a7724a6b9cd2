"""Training losses of the paper pipelines, as the authors code them (PIPELINES.md §2.5, §3.5, §4.4, §6.4)."""
