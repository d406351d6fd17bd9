// One axis of a separable resize: the input viewed as [outer, in_len, inner], the output as
// [outer, out_len, inner]; output position o reads T taps idx[o, t] with weights w[o, t]
// (nearest: one tap, no weight - a copy). Taps are summed in order starting from the first
// product, as the CPU kernel (ops/resize.py) accumulates them.
// meta: [total, out_len, in_len, inner, T, has_w]
@group(0) @binding(0) var<storage, read> prm: array<i32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<i32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = i32((wid.y * nwg.x + wid.x) * 64u + lid.x);
    if (i >= prm[0]) { return; }
    let out_len = prm[1];
    let in_len = prm[2];
    let inner = prm[3];
    let T = prm[4];
    let q = i % inner;
    let p = (i / inner) % out_len;
    let base = (i / (inner * out_len)) * in_len;
    if (prm[5] == 0) {
        o[i] = x[(base + idx[p * T]) * inner + q];
        return;
    }
    var acc = x[(base + idx[p * T]) * inner + q] * w[p * T];
    for (var t = 1; t < T; t++) {
        acc += x[(base + idx[p * T + t]) * inner + q] * w[p * T + t];
    }
    o[i] = acc;
}
