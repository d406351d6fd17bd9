// Softmax / LogSoftmax over rows of R contiguous values, one workgroup of 64 threads per row.
// meta: [rows, R, log, nan_to_zero]. nan_to_zero: a row whose values are all -inf (every key
// masked) gives zeros, as FusedAttention's nan_to_zero asks; otherwise NaN like the CPU.
@group(0) @binding(0) var<storage, read> prm: array<i32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;

var<workgroup> part: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = i32(wid.y * nwg.x + wid.x);
    if (row >= prm[0]) { return; }
    let R = prm[1];
    let t = i32(lid.x);
    let base = row * R;
    var m = bitcast<f32>(0xff800000u);
    for (var k = t; k < R; k += 64) { m = max(m, x[base + k]); }
    part[t] = m;
    workgroupBarrier();
    for (var s = 32; s > 0; s >>= 1u) {
        if (t < s) { part[t] = max(part[t], part[t + s]); }
        workgroupBarrier();
    }
    m = part[0];
    workgroupBarrier();
    var acc = 0.0;
    for (var k = t; k < R; k += 64) { acc += exp(x[base + k] - m); }
    part[t] = acc;
    workgroupBarrier();
    for (var s = 32; s > 0; s >>= 1u) {
        if (t < s) { part[t] = part[t] + part[t + s]; }
        workgroupBarrier();
    }
    let total = part[0];
    let masked = prm[3] != 0 && m == bitcast<f32>(0xff800000u);
    let lse = m + log(total);
    let inv = 1.0 / total;
    for (var k = t; k < R; k += 64) {
        let v = x[base + k];
        var y = 0.0;
        if (prm[2] != 0) { y = v - lse; } else { y = exp(v - m) * inv; }
        if (masked) { y = 0.0; }
        o[base + k] = y;
    }
}
