"""tinydl.kernels: ``@triton.jit`` kernels and thin launchers (torch tensors in, torch tensors out).

Launchers know nothing of autograd. Every kernel module lists the kernel configurations it can
launch on a GPU in ``AOT_SPECS`` so the ahead-of-time compile check (``tinydl.kernels._aot``)
can lower every one of them for sm_80/sm_90 on a machine without a GPU.
"""

import pkgutil as _pkgutil

# Every public module here defines kernels, except activations.py (device functions only, compiled
# as part of the kernels that call them).
KERNEL_MODULES = tuple(sorted(m.name for m in _pkgutil.iter_modules(__path__)
                              if not m.name.startswith("_") and m.name != "activations"))
