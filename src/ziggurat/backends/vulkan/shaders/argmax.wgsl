// ArgMax / ArgMin over rows of R contiguous values, one workgroup of 64 threads per row; ties go
// to the first index (or the last with select_last), as numpy / ONNX define them.
// meta: [rows, R, is_min, select_last]
@group(0) @binding(0) var<storage, read> prm: array<i32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<i32>;

var<workgroup> bv: array<f32, 64>;
var<workgroup> bi: array<i32, 64>;

// whether (v, i) beats (w, j)
fn better(v: f32, i: i32, w: f32, j: i32) -> bool {
    if (j < 0) { return i >= 0; }
    if (i < 0) { return false; }
    var strictly = v > w;
    if (prm[2] != 0) { strictly = v < w; }
    if (strictly) { return true; }
    if (v == w) { return select((i < j), (i > j), prm[3] != 0); }
    return false;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = i32(wid.y * nwg.x + wid.x);
    if (row >= prm[0]) { return; }
    let R = prm[1];
    let t = i32(lid.x);
    var v = 0.0;
    var idx = -1;
    for (var k = t; k < R; k += 64) {
        let u = x[row * R + k];
        if (better(u, k, v, idx)) { v = u; idx = k; }
    }
    bv[t] = v;
    bi[t] = idx;
    workgroupBarrier();
    for (var s = 32; s > 0; s >>= 1u) {
        if (t < s && better(bv[t + s], bi[t + s], bv[t], bi[t])) {
            bv[t] = bv[t + s];
            bi[t] = bi[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0) { o[row] = bi[0]; }
}
