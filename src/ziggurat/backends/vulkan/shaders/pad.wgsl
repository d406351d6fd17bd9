// Pad (constant, edge, reflect, wrap) and Tile (wrap) over N dims. Negative pads crop first:
// the input is the window [start, start + dim) of each axis; each output coordinate maps to the
// window coordinate c - begin[d], which is then clamped (edge), mirrored (reflect), taken modulo
// the window (wrap), or, out of range in constant mode, gives the constant.
// meta: [total, rank, mode, value bits, out_shape[rank], dim[rank], begin[rank], start[rank],
//        stride[rank]]; mode 0 constant, 1 edge, 2 reflect, 3 wrap.
@group(0) @binding(0) var<storage, read> prm: array<i32>;
@group(0) @binding(1) var<storage, read> x: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> o: array<{{T}}>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = i32((wid.y * nwg.x + wid.x) * 64u + lid.x);
    if (i >= prm[0]) { return; }
    let rank = prm[1];
    let mode = prm[2];
    var rem = i;
    var off = 0;
    var outside = false;
    for (var d = rank - 1; d >= 0; d--) {
        let n = prm[4 + d];
        let dim = prm[4 + rank + d];
        var c = rem % n - prm[4 + 2 * rank + d];
        rem = rem / n;
        if (mode == 1) {
            c = clamp(c, 0, dim - 1);
        } else if (mode == 2) {
            if (dim == 1) {
                c = 0;
            } else {
                let period = 2 * (dim - 1);
                c = ((c % period) + period) % period;
                if (c >= dim) { c = period - c; }
            }
        } else if (mode == 3) {
            c = ((c % dim) + dim) % dim;
        } else if (c < 0 || c >= dim) {
            outside = true;
        }
        off += (c + prm[4 + 3 * rank + d]) * prm[4 + 4 * rank + d];
    }
    if (outside) {
        o[i] = {{CONST}};
    } else {
        o[i] = x[off];
    }
}
