// LayerNormalization over rows of R contiguous values (optionally of x + skip + bias first, the
// residual add of SkipLayerNorm), one workgroup of 64 threads per row; mean, then the variance
// of the centred values (two passes: no cancellation from E[x^2] - E[x]^2).
// meta: [rows, R, eps bits, has_skip, has_beta, has_bias, write_sum]
@group(0) @binding(0) var<storage, read> prm: array<i32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> skip: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> o: array<f32>;
@group(0) @binding(7) var<storage, read_write> sum_out: array<f32>;

var<workgroup> part: array<f32, 64>;

fn load(base: i32, k: i32) -> f32 {
    var v = x[base + k];
    if (prm[3] != 0) { v += skip[base + k]; }
    if (prm[5] != 0) { v += bias[k]; }
    return v;
}

fn row_sum(t: i32, v: f32) -> f32 {
    part[t] = v;
    workgroupBarrier();
    for (var s = 32; s > 0; s >>= 1u) {
        if (t < s) { part[t] = part[t] + part[t + s]; }
        workgroupBarrier();
    }
    let r = part[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = i32(wid.y * nwg.x + wid.x);
    if (row >= prm[0]) { return; }
    let R = prm[1];
    let t = i32(lid.x);
    let base = row * R;
    var acc = 0.0;
    for (var k = t; k < R; k += 64) { acc += load(base, k); }
    let mean = row_sum(t, acc) / f32(R);
    var sq = 0.0;
    for (var k = t; k < R; k += 64) { let d = load(base, k) - mean; sq += d * d; }
    let inv = 1.0 / sqrt(row_sum(t, sq) / f32(R) + bitcast<f32>(prm[2]));
    for (var k = t; k < R; k += 64) {
        let v = load(base, k);
        var y = (v - mean) * inv * gamma[k];
        if (prm[4] != 0) { y += beta[k]; }
        o[base + k] = y;
        if (prm[6] != 0) { sum_out[base + k] = v; }
    }
}
