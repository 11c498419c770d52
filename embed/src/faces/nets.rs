//! P-Net, R-Net and O-Net as in `facenet_pytorch/models/mtcnn.py`, on candle.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};

/// Output length of `nn.MaxPool2d(k, s, ceil_mode=True)` along an axis of `len`.
fn ceil_pool_len(len: usize, k: usize, s: usize) -> usize {
    let mut o = len.saturating_sub(k).div_ceil(s) + 1;
    // PyTorch: the last window must start inside the input.
    if (o - 1) * s >= len {
        o -= 1;
    }
    o
}

/// The contiguous f32 data of a CPU storage, or an error naming `op`.
fn cpu_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let (start, end) =
        layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("{op}: input not contiguous")))?;
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// Ceil-mode max pooling over NCHW, one pass on the CPU.
struct MaxPoolCeil {
    k: usize,
    s: usize,
}

impl CustomOp1 for MaxPoolCeil {
    fn name(&self) -> &'static str {
        "mtcnn-max-pool-ceil"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(storage, layout, self.name())?;
        let (n, c, h, w) = layout.shape().dims4()?;
        let (oh, ow) = (ceil_pool_len(h, self.k, self.s), ceil_pool_len(w, self.k, self.s));
        let mut out = vec![0f32; n * c * oh * ow];
        for (src, dst) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
            for oy in 0..oh {
                let (y0, y1) = (oy * self.s, (oy * self.s + self.k).min(h));
                for ox in 0..ow {
                    let (x0, x1) = (ox * self.s, (ox * self.s + self.k).min(w));
                    let mut m = f32::NEG_INFINITY;
                    for y in y0..y1 {
                        for &v in &src[y * w + x0..y * w + x1] {
                            m = m.max(v);
                        }
                    }
                    dst[oy * ow + ox] = m;
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// `nn.MaxPool2d(k, s, ceil_mode=True)`: the output covers the input's tail with a
/// partial window. On the CPU a custom one-pass kernel; elsewhere candle, which pools only
/// whole windows, on the input padded right and bottom with −∞ (never the max).
fn max_pool_ceil(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&MaxPoolCeil { k, s });
    }
    let (n, c, h, w) = x.dims4()?;
    let (ph, pw) = ((ceil_pool_len(h, k, s) - 1) * s + k, (ceil_pool_len(w, k, s) - 1) * s + k);
    let mut x = x.clone();
    if pw > w {
        let pad = Tensor::full(f32::NEG_INFINITY, (n, c, h, pw - w), x.device())?.to_dtype(x.dtype())?;
        x = Tensor::cat(&[&x, &pad], 3)?;
    }
    if ph > h {
        let pad = Tensor::full(f32::NEG_INFINITY, (n, c, ph - h, pw), x.device())?.to_dtype(x.dtype())?;
        x = Tensor::cat(&[&x, &pad], 2)?;
    }
    x.max_pool2d_with_stride(k, s)
}

fn conv(vb: &VarBuilder, name: &str, cin: usize, cout: usize, k: usize) -> Result<Conv2d> {
    candle_nn::conv2d(cin, cout, k, Conv2dConfig::default(), vb.pp(name))
}

/// A bias-free convolution followed by [`BiasPrelu`]: the bias add is fused into the
/// activation pass instead of being a pass of its own.
struct ConvPrelu {
    conv: Conv2d,
    act: BiasPrelu,
}

impl ConvPrelu {
    fn new(vb: &VarBuilder, conv_name: &str, prelu_name: &str, cin: usize, cout: usize, k: usize) -> Result<Self> {
        let weight = vb.pp(conv_name).get((cout, cin, k, k), "weight")?;
        let bias = vb.pp(conv_name).get(cout, "bias")?;
        let slopes = vb.pp(prelu_name).get(cout, "weight")?;
        Ok(ConvPrelu { conv: Conv2d::new(weight, None, Conv2dConfig::default()), act: BiasPrelu::new(bias, slopes)? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.act.forward(&self.conv.forward(x)?)
    }
}

/// `prelu(x + bias)` with per-channel bias and slopes on dimension 1 (`nn.PReLU(c)`:
/// `x` where `x > 0`, else `slope · x`). One pass on the CPU, candle ops elsewhere.
struct BiasPrelu {
    bias: Tensor,
    slopes: Tensor,
    bias_v: Vec<f32>,
    slopes_v: Vec<f32>,
}

impl BiasPrelu {
    fn new(bias: Tensor, slopes: Tensor) -> Result<Self> {
        let bias_v = bias.to_dtype(DType::F32)?.to_vec1()?;
        let slopes_v = slopes.to_dtype(DType::F32)?.to_vec1()?;
        Ok(BiasPrelu { bias, slopes, bias_v, slopes_v })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return x.contiguous()?.apply_op1_no_bwd(self);
        }
        let mut shape = vec![1; x.rank()];
        shape[1] = self.bias.elem_count();
        let x = x.broadcast_add(&self.bias.reshape(shape.as_slice())?)?;
        let zeros = x.zeros_like()?;
        x.maximum(&zeros)? + x.minimum(&zeros)?.broadcast_mul(&self.slopes.reshape(shape)?)?
    }
}

impl CustomOp1 for BiasPrelu {
    fn name(&self) -> &'static str {
        "mtcnn-bias-prelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(storage, layout, self.name())?;
        let dims = layout.dims();
        let c = self.bias_v.len();
        if dims.len() < 2 || dims[1] != c {
            candle_core::bail!("mtcnn-bias-prelu: {c} channels, input {dims:?}");
        }
        let inner: usize = dims[2..].iter().product();
        let mut out = Vec::with_capacity(x.len());
        for (i, chunk) in x.chunks_exact(inner.max(1)).enumerate() {
            let (b, a) = (self.bias_v[i % c], self.slopes_v[i % c]);
            out.extend(chunk.iter().map(|&v| {
                let v = v + b;
                if v > 0.0 { v } else { a * v }
            }));
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `nn.Linear` followed by `nn.PReLU`, the bias fused into the activation.
struct LinearPrelu {
    weight: Tensor,
    act: BiasPrelu,
}

impl LinearPrelu {
    fn new(vb: &VarBuilder, dense: &str, prelu_name: &str, cin: usize, cout: usize) -> Result<Self> {
        let weight = vb.pp(dense).get((cout, cin), "weight")?;
        let bias = vb.pp(dense).get(cout, "bias")?;
        let slopes = vb.pp(prelu_name).get(cout, "weight")?;
        Ok(LinearPrelu { weight, act: BiasPrelu::new(bias, slopes)? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.act.forward(&x.matmul(&self.weight.t()?)?)
    }
}

fn linear(vb: &VarBuilder, name: &str, cin: usize, cout: usize) -> Result<Linear> {
    candle_nn::linear(cin, cout, vb.pp(name))
}

/// `x.permute(0, 3, 2, 1).contiguous().view(n, -1)`: the dense layers were trained on
/// a (W, H, C) flattening (the weights come from the Caffe/MATLAB original).
fn flatten_whc(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 3, 2, 1))?.contiguous()?.flatten_from(1)
}

/// Probability of the "face" class: softmax over the 2 logits, class 1.
fn face_prob(logits: &Tensor, dim: usize) -> Result<Tensor> {
    candle_nn::ops::softmax(logits, dim)?.narrow(dim, 1, 1)?.squeeze(dim)
}

/// The proposal network, fully convolutional.
pub(crate) struct PNet {
    conv1: ConvPrelu,
    conv2: ConvPrelu,
    conv3: ConvPrelu,
    conv4_1: Conv2d,
    conv4_2: Conv2d,
}

impl PNet {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(PNet {
            conv1: ConvPrelu::new(&vb, "conv1", "prelu1", 3, 10, 3)?,
            conv2: ConvPrelu::new(&vb, "conv2", "prelu2", 10, 16, 3)?,
            conv3: ConvPrelu::new(&vb, "conv3", "prelu3", 16, 32, 3)?,
            conv4_1: conv(&vb, "conv4_1", 32, 2, 1)?,
            conv4_2: conv(&vb, "conv4_2", 32, 4, 1)?,
        })
    }

    /// (N, 3, H, W) → (regression (N, 4, h, w), face probability (N, h, w)).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = max_pool_ceil(&self.conv1.forward(x)?, 2, 2)?;
        let x = self.conv3.forward(&self.conv2.forward(&x)?)?;
        let prob = face_prob(&self.conv4_1.forward(&x)?, 1)?;
        Ok((self.conv4_2.forward(&x)?, prob))
    }
}

/// The refinement network on 24×24 crops.
pub(crate) struct RNet {
    conv1: ConvPrelu,
    conv2: ConvPrelu,
    conv3: ConvPrelu,
    dense4: LinearPrelu,
    dense5_1: Linear,
    dense5_2: Linear,
}

impl RNet {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(RNet {
            conv1: ConvPrelu::new(&vb, "conv1", "prelu1", 3, 28, 3)?,
            conv2: ConvPrelu::new(&vb, "conv2", "prelu2", 28, 48, 3)?,
            conv3: ConvPrelu::new(&vb, "conv3", "prelu3", 48, 64, 2)?,
            dense4: LinearPrelu::new(&vb, "dense4", "prelu4", 576, 128)?,
            dense5_1: linear(&vb, "dense5_1", 128, 2)?,
            dense5_2: linear(&vb, "dense5_2", 128, 4)?,
        })
    }

    /// (N, 3, 24, 24) → (regression (N, 4), face probability (N)).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = max_pool_ceil(&self.conv1.forward(x)?, 3, 2)?;
        let x = max_pool_ceil(&self.conv2.forward(&x)?, 3, 2)?;
        let x = self.conv3.forward(&x)?;
        let x = self.dense4.forward(&flatten_whc(&x)?)?;
        let prob = face_prob(&self.dense5_1.forward(&x)?, 1)?;
        Ok((self.dense5_2.forward(&x)?, prob))
    }
}

/// The output network on 48×48 crops, with landmarks.
pub(crate) struct ONet {
    conv1: ConvPrelu,
    conv2: ConvPrelu,
    conv3: ConvPrelu,
    conv4: ConvPrelu,
    dense5: LinearPrelu,
    dense6_1: Linear,
    dense6_2: Linear,
    dense6_3: Linear,
}

impl ONet {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(ONet {
            conv1: ConvPrelu::new(&vb, "conv1", "prelu1", 3, 32, 3)?,
            conv2: ConvPrelu::new(&vb, "conv2", "prelu2", 32, 64, 3)?,
            conv3: ConvPrelu::new(&vb, "conv3", "prelu3", 64, 64, 3)?,
            conv4: ConvPrelu::new(&vb, "conv4", "prelu4", 64, 128, 2)?,
            dense5: LinearPrelu::new(&vb, "dense5", "prelu5", 1152, 256)?,
            dense6_1: linear(&vb, "dense6_1", 256, 2)?,
            dense6_2: linear(&vb, "dense6_2", 256, 4)?,
            dense6_3: linear(&vb, "dense6_3", 256, 10)?,
        })
    }

    /// (N, 3, 48, 48) → (regression (N, 4), landmarks (N, 10), face probability (N)).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let x = max_pool_ceil(&self.conv1.forward(x)?, 3, 2)?;
        let x = max_pool_ceil(&self.conv2.forward(&x)?, 3, 2)?;
        let x = max_pool_ceil(&self.conv3.forward(&x)?, 2, 2)?;
        let x = self.conv4.forward(&x)?;
        let x = self.dense5.forward(&flatten_whc(&x)?)?;
        let prob = face_prob(&self.dense6_1.forward(&x)?, 1)?;
        Ok((self.dense6_2.forward(&x)?, self.dense6_3.forward(&x)?, prob))
    }
}
