"""Conformance cases Ziggurat does not pass, each with the reason. Tests mark them xfail(strict),
so a case that starts passing must be removed from here. README lists the same cases."""

_RANDOM = (
    "Bernoulli draws random numbers: the expected output is one draw of numpy's global generator "
    "at case-generation time and the spec says implementations need not reproduce it even with a "
    "seed; tests/conformance/test_random_cases.py checks shape, dtype, values in {0, 1} and the mean instead"
)
_BF16 = (
    "bfloat16 Attention: expected values carry the reference evaluator's rounding to bfloat16 "
    "after every step, while the tolerance (rtol 1e-3) is 8x tighter than bfloat16's own "
    "epsilon (7.8e-3); Ziggurat's results are within 1-2 bfloat16 ulps of them"
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

NODE_EXCLUDES: dict[str, str] = {
    **RANDOM_CASES,
    "test_attention_3d_causal_bf16_expanded": _BF16,
    "test_attention_4d_attn_mask_causal_bf16": _BF16,
    "test_attention_4d_attn_mask_causal_bf16_expanded": _BF16,
    "test_attention_4d_causal_bf16_expanded": _BF16,
    "test_attention_4d_causal_padded_kv_bf16": _BF16,
    "test_attention_4d_causal_padded_kv_bf16_expanded": _BF16,
    "test_attention_4d_padded_kv_bf16": _BF16,
    "test_attention_4d_padded_kv_bf16_expanded": _BF16,
}

DATA_EXCLUDES: dict[str, str] = {
    "light_squeezenet": (
        "the expected output is a softmax of logits near 9.5e9, where float32's spacing is 1024: its "
        "1000 classes come out equal (0.001 each) only if the GEMM rounds every output row the same "
        "way, which OpenBLAS's blocked kernels do not; test_light_squeezenet_logits checks the "
        "logits against onnxruntime instead (within 1e-6 relative)"
    ),
}
