// Helpers shared by every Ziggurat shader (prepended to each one).

// erf(x) for f32. |x| < 1: its Maclaurin series to x^23 (truncation < 1.1e-9 there, so only
// float32 rounding remains, ~2 ulp relative: small arguments stay accurate). Elsewhere
// Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7 in exact arithmetic). Measured against
// float64 math.erf on 4e5 points in [-6, 6] on lavapipe: max absolute error 2.1e-7; the stated
// bound, asserted by tests/backends/vulkan, is 2.5e-7.
fn z_erf(x: f32) -> f32 {
    let ax = abs(x);
    if (ax < 1.0) {
        let u = x * x;
        // sum_n (-1)^n x^(2n+1) / (n! (2n+1)), n = 0..11, times 2/sqrt(pi)
        var p = -1.0892221e-9;
        p = p * u + 1.3122533e-8;
        p = p * u - 1.4503852e-7;
        p = p * u + 1.4589169e-6;
        p = p * u - 1.3227513e-5;
        p = p * u + 1.0683761e-4;
        p = p * u - 7.5757576e-4;
        p = p * u + 4.6296296e-3;
        p = p * u - 2.3809524e-2;
        p = p * u + 0.1;
        p = p * u - 0.33333333;
        p = p * u + 1.0;
        return 1.1283791670955126 * x * p;
    }
    let t = 1.0 / (1.0 + 0.3275911 * ax);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let y = 1.0 - poly * exp(-ax * ax);
    return select(-y, y, x >= 0.0);
}

// tanh without the inf/inf of sinh/cosh for large |x|; tanh(9) rounds to 1 in f32.
fn z_tanh(x: f32) -> f32 {
    return tanh(clamp(x, -9.0, 9.0));
}

fn z_sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn z_gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + z_erf(x * 0.7071067811865476));
}

fn z_gelu_tanh(x: f32) -> f32 {
    return 0.5 * x * (1.0 + z_tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

// ONNX Pow: negative bases with integral exponents allowed (WGSL's pow is undefined for x < 0).
fn z_pow(a: f32, b: f32) -> f32 {
    if (b == 0.0) { return 1.0; }
    if (b == 1.0) { return a; }
    if (b == 2.0) { return a * a; }
    if (b == 0.5) { return sqrt(a); }
    let r = exp2(b * log2(abs(a)));
    if (a >= 0.0) { return select(r, select(0.0, bitcast<f32>(0x7f800000u), b < 0.0), a == 0.0); }
    if (floor(b) != b) { return bitcast<f32>(0x7fc00000u); }
    let odd = abs(b - 2.0 * floor(b * 0.5)) == 1.0;
    return select(r, -r, odd);
}

// Fused epilogue activations: 0 none, 1 relu, 2 gelu (erf), 3 gelu (tanh), 4 clip [p0, p1],
// 5 sigmoid, 6 leaky relu (alpha p0).
fn z_act(x: f32, code: i32, p0: f32, p1: f32) -> f32 {
    switch code {
        case 1: { return max(x, 0.0); }
        case 2: { return z_gelu(x); }
        case 3: { return z_gelu_tanh(x); }
        case 4: { return min(max(x, p0), p1); }
        case 5: { return z_sigmoid(x); }
        case 6: { return select(x * p0, x, x >= 0.0); }
        default: { return x; }
    }
}
