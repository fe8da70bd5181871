"""What runs the chain as processes: the command line (``cli``), the notebooks through papermill (``notebooks``),
one free GPU per style job (``gpus``) and the one-time kernel compile before any notebook (``warmup``)."""
