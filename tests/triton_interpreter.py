"""For the CPU test modules of the Triton kernels: switch Triton's interpreter on, or skip the module.

Usage (at the top of a test module, before anything imports Triton): from triton_interpreter import
interpret_or_skip; interpret_or_skip()

Skipped on a GPU machine (the kernels are tested compiled there, in test_gpu.py; interpreting them would switch
compilation off for the whole process), where Triton was imported before the interpreter could be switched on
(it reads TRITON_INTERPRET at import), and where Triton is not installed (it is part of the test extra)."""

from __future__ import annotations

import os
import sys

import pytest
import torch


def interpret_or_skip() -> None:
    if torch.cuda.is_available():
        pytest.skip("the Triton kernels are tested compiled on this GPU", allow_module_level=True)
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton was imported before its interpreter could be switched on", allow_module_level=True)
    os.environ["TRITON_INTERPRET"] = "1"  # this process has no GPU, so nothing else runs the kernels
    pytest.importorskip("triton")
