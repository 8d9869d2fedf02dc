"""Instance providers: where instances really run (containerd, simulated, cloud later)."""
