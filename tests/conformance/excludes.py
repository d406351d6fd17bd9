"""Conformance cases Ziggurat does not pass as given, each with the reason. Tests mark NODE_EXCLUDES
xfail(strict), so a case that starts passing must be removed from here; random cases are skipped and
BF16_TOLERANCE cases run at a bfloat16 tolerance. README lists the same cases."""

_RANDOM = (
    "Bernoulli draws random numbers: the expected output is one draw of numpy's global generator "
    "at case-generation time and the spec says implementations need not reproduce it even with a "
    "seed; tests/conformance/test_random_cases.py checks shape, dtype, values in {0, 1} and the mean instead"
)
_BF16 = (
    "bfloat16 Attention: expected values carry the reference evaluator's rounding to bfloat16 "
    "after every step, while the case's tolerance (rtol 1e-3) is 8x tighter than bfloat16's own "
    "epsilon (7.8e-3); measured: Ziggurat is within 1-2 bfloat16 ulps of them. Compared at "
    "runner.bf16_tolerance instead"
)

# Random outputs: they may match the expected draw by chance, so these are skipped (not xfailed)
# in the node suite and checked by property instead.
RANDOM_CASES: dict[str, str] = {
    name: _RANDOM
    for name in (
        "test_bernoulli", "test_bernoulli_expanded", "test_bernoulli_double",
        "test_bernoulli_double_expanded", "test_bernoulli_seed", "test_bernoulli_seed_expanded",
    )
}  # fmt: skip

# Every bfloat16 Attention case, including the two that match exactly here: whether a float32
# result rounds to the same bfloat16 as the reference's step-by-step rounding depends on the BLAS's
# summation order, so a tolerance below one bfloat16 ulp would be machine-dependent.
BF16_TOLERANCE: dict[str, str] = {
    f"test_attention_{case}{form}": _BF16
    for case in (
        "3d_causal_bf16", "4d_attn_mask_causal_bf16", "4d_causal_bf16",
        "4d_causal_padded_kv_bf16", "4d_padded_kv_bf16",
    )
    for form in ("", "_expanded")
}  # fmt: skip

NODE_EXCLUDES: dict[str, str] = {**RANDOM_CASES}

# Data-set cases (simple, pytorch-converted, pytorch-operator) expected to fail, with the reason.
DATA_EXCLUDES: dict[str, str] = {}
