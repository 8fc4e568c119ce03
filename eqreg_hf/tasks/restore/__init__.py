"""Restoration (denoising, inpainting, super-resolution) with EQ-Reg: data, networks, baselines, recipe."""
