// Batched, broadcasting matrix product with a fused epilogue:
//   o[b, m, n] = act(alpha * sum_k A[b, m, k] * B[b, k, n] + beta * C[b, m, n])
// A, B and C are addressed through strides (transposes and broadcasts cost nothing); the output
// is contiguous [batch, M, N].
// meta: [M, N, K, brank, sAm, sAk, sBk, sBn, sCm, sCn, act, p0, p1, alpha, beta, has_c,
//        bshape[brank], A batch strides[brank], B batch strides[brank], C batch strides[brank]]
@group(0) @binding(0) var<storage, read> prm: array<i32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;

// 64x64 output tile per workgroup of 16x16 threads, each thread a 4x4 block (rows ly + 16 i,
// columns lx + 16 j), K in slices of 16 staged through workgroup memory. Every output still sums
// its K products in ascending k, one at a time.
var<workgroup> As: array<f32, 1024>;  // [16 k][64 m]
var<workgroup> Bs: array<f32, 1024>;  // [16 k][64 n]

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
    let lx = i32(lid.x);
    let ly = i32(lid.y);
    let tid = ly * 16 + lx;
    let row0 = i32(wid.y) * 64;
    let col0 = i32(wid.x) * 64;
    var acc: array<f32, 16>;
    for (var q = 0; q < 16; q++) { acc[q] = 0.0; }
    let ntiles = (K + 15) / 16;
    for (var t = 0; t < ntiles; t++) {
        for (var l = 0; l < 4; l++) {
            let idx = tid + l * 256;
            let m = idx / 16;
            let ka = t * 16 + idx % 16;
            var va = 0.0;
            if (row0 + m < M && ka < K) { va = a[oa + (row0 + m) * prm[4] + ka * prm[5]]; }
            As[(idx % 16) * 64 + m] = va;
            let kb = t * 16 + idx / 64;
            let n = idx % 64;
            var vb = 0.0;
            if (kb < K && col0 + n < N) { vb = b[ob + kb * prm[6] + (col0 + n) * prm[7]]; }
            Bs[(idx / 64) * 64 + n] = vb;
        }
        workgroupBarrier();
        for (var k = 0; k < 16; k++) {
            var av: array<f32, 4>;
            for (var i = 0; i < 4; i++) { av[i] = As[k * 64 + ly + 16 * i]; }
            for (var j = 0; j < 4; j++) {
                let bv = Bs[k * 64 + lx + 16 * j];
                for (var i = 0; i < 4; i++) { acc[i * 4 + j] = acc[i * 4 + j] + av[i] * bv; }
            }
        }
        workgroupBarrier();
    }
    let alpha = bitcast<f32>(prm[13]);
    let beta = bitcast<f32>(prm[14]);
    let p0 = bitcast<f32>(prm[11]);
    let p1 = bitcast<f32>(prm[12]);
    for (var i = 0; i < 4; i++) {
        let row = row0 + ly + 16 * i;
        if (row >= M) { continue; }
        for (var j = 0; j < 4; j++) {
            let col = col0 + lx + 16 * j;
            if (col >= N) { continue; }
            var y = alpha * acc[i * 4 + j];
            if (prm[15] != 0) { y = y + beta * c[oc + row * prm[8] + col * prm[9]]; }
            o[(batch * M + row) * N + col] = z_act(y, prm[10], p0, p1);
        }
    }
}
