// Row reductions: the input viewed as [rows, R] (reduced axes moved last by the caller), one
// workgroup of 64 threads per row, a tree reduction in workgroup memory.
// meta: [rows, R, op]; op 0 sum, 1 mean, 2 max, 3 min, 4 sum of squares, 5 L1, 6 L2, 7 prod,
// 8 log-sum-exp.
@group(0) @binding(0) var<storage, read> prm: array<i32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;

var<workgroup> part: array<f32, 64>;

fn combine(op: i32, u: f32, v: f32) -> f32 {
    if (op == 2 || op == 8) { return max(u, v); }
    if (op == 3) { return min(u, v); }
    if (op == 7) { return u * v; }
    return u + v;
}

fn ident(op: i32) -> f32 {
    if (op == 2 || op == 8) { return bitcast<f32>(0xff800000u); }  // -inf
    if (op == 3) { return bitcast<f32>(0x7f800000u); }  // +inf
    if (op == 7) { return 1.0; }
    return 0.0;
}

fn reduce_row(op: i32, base: i32, R: i32, t: i32, shift: f32) -> f32 {
    var acc = ident(op);
    for (var k = t; k < R; k += 64) {
        var v = x[base + k];
        if (op == 4 || op == 6) { v = v * v; }
        if (op == 5) { v = abs(v); }
        if (op == 9) { v = exp(v - shift); }
        acc = combine(op, acc, v);
    }
    part[t] = acc;
    workgroupBarrier();
    for (var s = 32; s > 0; s >>= 1u) {
        if (t < s) { part[t] = combine(op, part[t], part[t + s]); }
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
    if (row >= prm[0]) { return; }  // uniform across the workgroup
    let R = prm[1];
    let op = prm[2];
    let t = i32(lid.x);
    let base = row * R;
    var r = reduce_row(op, base, R, t, 0.0);
    if (op == 8) {  // log-sum-exp: max first, then the shifted sum (op 9 = exp(v - max) summed)
        let m = r;
        let s = reduce_row(9, base, R, t, m);
        r = select(m + log(s), m, m == bitcast<f32>(0xff800000u));
    }
    if (t == 0) {
        if (op == 1) { r = r / f32(R); }
        if (op == 6) { r = sqrt(r); }
        o[row] = r;
    }
}
