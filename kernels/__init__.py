"""tinydl.kernels: ``@triton.jit`` kernels and thin launchers (torch tensors in, torch tensors out).

Launchers know nothing of autograd. Each module lists the kernel configurations it can launch
on a GPU in ``AOT_SPECS`` so the ahead-of-time compile check (``tinydl.kernels._aot``) can
lower every one of them for sm_80/sm_90 on a machine without a GPU.
"""

# Modules that define kernels, in the order the compile check reports them.
KERNEL_MODULES = ("elementwise", "linear", "optim")
