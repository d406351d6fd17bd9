// Direct 2-D convolution (1-D runs as H = 1), NCHW, groups (depthwise included), strides,
// dilations and begin pads, with a fused epilogue: act(conv + bias + skip).
// One thread per output element.
// meta: [total, N, C, H, W, Co, OH, OW, KH, KW, sh, sw, dh, dw, ph, pw, group, has_bias,
//        has_skip, act, p0, p1]
@group(0) @binding(0) var<storage, read> prm: array<i32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> skip: array<f32>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = i32((wid.y * nwg.x + wid.x) * 64u + lid.x);
    if (i >= prm[0]) { return; }
    let C = prm[2]; let H = prm[3]; let W = prm[4]; let Co = prm[5];
    let OH = prm[6]; let OW = prm[7]; let KH = prm[8]; let KW = prm[9];
    let ox = i % OW;
    let oy = (i / OW) % OH;
    let co = (i / (OW * OH)) % Co;
    let n = i / (OW * OH * Co);
    let cg = C / prm[16];  // input channels per group
    let g = co / (Co / prm[16]);
    var acc = 0.0;
    for (var ci = 0; ci < cg; ci++) {
        let xc = ((n * C + g * cg + ci) * H) * W;
        let wc = ((co * cg + ci) * KH) * KW;
        for (var ky = 0; ky < KH; ky++) {
            let iy = oy * prm[10] + ky * prm[12] - prm[14];
            if (iy < 0 || iy >= H) { continue; }
            for (var kx = 0; kx < KW; kx++) {
                let ix = ox * prm[11] + kx * prm[13] - prm[15];
                if (ix < 0 || ix >= W) { continue; }
                acc += x[xc + iy * W + ix] * w[wc + ky * KW + kx];
            }
        }
    }
    if (prm[17] != 0) { acc += bias[co]; }
    if (prm[18] != 0) { acc += skip[i]; }
    o[i] = z_act(acc, prm[19], bitcast<f32>(prm[20]), bitcast<f32>(prm[21]));
}
