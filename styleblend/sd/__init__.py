"""The Stable Diffusion 2.x stack in Jittor, with diffusers' split: ``models`` (UNet, VAE, CLIP text encoder,
attention, LoRA), ``schedulers``, ``sampling`` (text-to-image, image-to-image), ``loading`` (diffusers folders) and
``tokens`` (new token rows for textual inversion). Nothing here knows StyleBlend."""
