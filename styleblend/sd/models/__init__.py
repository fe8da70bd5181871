"""The Stable Diffusion 2.x models in Jittor, with diffusers' parameter names and config keys."""
