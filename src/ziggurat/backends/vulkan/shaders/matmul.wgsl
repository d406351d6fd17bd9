// Batched, broadcasting matrix product with a fused epilogue:
//   o[b, m, n] = act(alpha * sum_k A[b, m, k] * B[b, k, n] + beta * C[b, m, n])
// A, B and C are addressed through strides (transposes and broadcasts cost nothing); the output
// is contiguous [batch, M, N]. One 16x16 tile of the output per workgroup, 16x16 tiles of A and
// B staged through workgroup memory.
// meta: [M, N, K, brank, sAm, sAk, sBk, sBn, sCm, sCn, act, p0, p1, alpha, beta, has_c,
//        bshape[brank], A batch strides[brank], B batch strides[brank], C batch strides[brank]]
@group(0) @binding(0) var<storage, read> prm: array<i32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;

const TS: u32 = 16u;
var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let M = prm[0];
    let N = prm[1];
    let K = prm[2];
    let brank = prm[3];
    let batch = i32(wid.z);
    // batch offsets of A, B, C from the (broadcast) batch index
    var oa = 0;
    var ob = 0;
    var oc = 0;
    var rem = batch;
    for (var d = brank - 1; d >= 0; d--) {
        let n = prm[16 + d];
        let x = rem % n;
        rem = rem / n;
        oa += x * prm[16 + brank + d];
        ob += x * prm[16 + 2 * brank + d];
        oc += x * prm[16 + 3 * brank + d];
    }
    let row = i32(wid.y * TS + lid.y);
    let col = i32(wid.x * TS + lid.x);
    var acc = 0.0;
    let ntiles = (K + 15) / 16;
    for (var t = 0; t < ntiles; t++) {
        let ka = t * 16 + i32(lid.x);
        let kb = t * 16 + i32(lid.y);
        var va = 0.0;
        if (row < M && ka < K) { va = a[oa + row * prm[4] + ka * prm[5]]; }
        var vb = 0.0;
        if (col < N && kb < K) { vb = b[ob + kb * prm[6] + col * prm[7]]; }
        ta[lid.y][lid.x] = va;
        tb[lid.y][lid.x] = vb;
        workgroupBarrier();
        for (var k = 0u; k < TS; k++) {
            acc = acc + ta[lid.y][k] * tb[k][lid.x];
        }
        workgroupBarrier();
    }
    if (row >= M || col >= N) { return; }
    var y = bitcast<f32>(prm[13]) * acc;
    if (prm[15] != 0) {
        y = y + bitcast<f32>(prm[14]) * c[oc + row * prm[8] + col * prm[9]];
    }
    o[(batch * M + row) * N + col] = z_act(y, prm[10], bitcast<f32>(prm[11]), bitcast<f32>(prm[12]));
}
