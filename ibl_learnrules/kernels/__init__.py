"""Fast CPU implementations of the rules' TBPTT chunks (numba), one module per rule family.

A kernel belongs to its rule: :meth:`ibl_learnrules.rules.LearningRule.chunk_kernel` returns
it, and the engine wraps it so that torch autograd sees one function per chunk. The reference
is :func:`ibl_learnrules.engine.rollout`; ``tests/test_kernels.py`` holds every registered
rule's kernel to it (loss, carried state, every gradient).
"""
