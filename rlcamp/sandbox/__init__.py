"""Code execution for rewards: a SandboxFusion-compatible service, its client, and the jail."""
