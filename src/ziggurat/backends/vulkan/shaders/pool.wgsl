// 2-D max / average pooling (1-D runs as H = 1), NCHW, one thread per output element.
// meta: [total, C, H, W, OH, OW, KH, KW, sh, sw, dh, dw, ph, pw, mode, count_include_pad,
//        pad_h_end, pad_w_end]; mode 0 max, 1 average.
@group(0) @binding(0) var<storage, read> prm: array<i32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = i32((wid.y * nwg.x + wid.x) * 64u + lid.x);
    if (i >= prm[0]) { return; }
    let H = prm[2]; let W = prm[3]; let OH = prm[4]; let OW = prm[5];
    let KH = prm[6]; let KW = prm[7];
    let ox = i % OW;
    let oy = (i / OW) % OH;
    let nc = i / (OW * OH);
    let base = nc * H * W;
    var mx = bitcast<f32>(0xff800000u);
    var acc = 0.0;
    var cnt = 0;
    var padded = 0;
    for (var ky = 0; ky < KH; ky++) {
        let iy = oy * prm[8] + ky * prm[10] - prm[12];
        for (var kx = 0; kx < KW; kx++) {
            let ix = ox * prm[9] + kx * prm[11] - prm[13];
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
                // inside the explicit pads (not the ceil_mode overhang): counted when
                // count_include_pad
                if (iy >= -prm[12] && iy < H + prm[16] && ix >= -prm[13] && ix < W + prm[17]) {
                    padded++;
                }
                continue;
            }
            let v = x[base + iy * W + ix];
            mx = max(mx, v);
            acc += v;
            cnt++;
        }
    }
    if (prm[14] == 0) {
        o[i] = mx;
    } else {
        var d = cnt;
        if (prm[15] != 0) { d = cnt + padded; }
        o[i] = acc / f32(d);
    }
}
