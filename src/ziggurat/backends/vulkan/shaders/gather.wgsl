// Gather along one axis: data viewed as [outer, axis_dim, inner], indices flattened (count idx).
// meta: [total, outer, axis_dim, inner, idx]
@group(0) @binding(0) var<storage, read> prm: array<i32>;
@group(0) @binding(1) var<storage, read> data: array<{{T}}>;
@group(0) @binding(2) var<storage, read> ind: array<i32>;
@group(0) @binding(3) var<storage, read_write> o: array<{{T}}>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = i32((wid.y * nwg.x + wid.x) * 64u + lid.x);
    if (i >= prm[0]) { return; }
    let dim = prm[2];
    let inner = prm[3];
    let nidx = prm[4];
    let q = i % inner;
    let j = (i / inner) % nidx;
    let outer = i / (inner * nidx);
    var k = ind[j];
    if (k < 0) { k = k + dim; }
    // Out-of-range indices (an ONNX error the CPU kernel raises) read zero here: a shader
    // cannot raise, and reading outside the binding would be undefined.
    if (k < 0 || k >= dim) { o[i] = {{T}}(0); return; }
    o[i] = data[(outer * dim + k) * inner + q];
}
