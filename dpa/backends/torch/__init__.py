"""PyTorch: evaluation (`backend`), training (`train`), fast kernels (`ops`) and the .pth
format (`modelfile`)."""
