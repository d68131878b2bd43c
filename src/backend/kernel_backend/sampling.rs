//! Sampling on the device (`kernels/sampling.cu`): only the counters go up and five words per
//! row come back, never the (rows, V) logits.

use super::{DeviceBuf, KernelBackend};
use crate::backend::device::Device;
use crate::backend::kernels::sampling::{self as ks, status, OUT_WORDS};
use crate::backend::{check_sample_rows, SampleError, SampleParams, Sampled};

impl<D: Device> KernelBackend<D> {
    /// [`Backend::sample`](crate::backend::Backend::sample), also returning the uniform each
    /// row was drawn with as the device computed it, so a test can hold the device's Philox to
    /// `counter_rng::uniform` bit for bit.
    pub fn sample_with_uniforms(
        &self,
        logits: &DeviceBuf<D>,
        v: usize,
        counters: &[[u32; 2]],
        p: SampleParams,
    ) -> Vec<(Result<Sampled, SampleError>, f64)> {
        let rows = counters.len();
        let shapes = format!("rows={rows}, V={v}");
        check_sample_rows(logits.len(), rows, v);
        if rows == 0 {
            return Vec::new();
        }
        // 1/T exactly as the oracle forms it (rollout::sampler::inv_temperature).
        let greedy = p.temperature == 0.0;
        let inv_t = if greedy { 1.0 } else { 1.0 / p.temperature };
        let flat: Vec<u32> = counters.iter().flatten().copied().collect();
        let d_counters = self.upload_words(&flat);
        let mut out = self.buf("sample", rows * OUT_WORDS);
        let launch =
            ks::SampleLaunch { rows, v, inv_t, greedy, top_k: p.top_k, top_p: p.top_p, seed: p.seed, step: p.step };
        let (o, x, c) = (self.ptr_mut(&mut out), self.ptr(logits), self.ptr(&d_counters));
        // SAFETY: logits holds at least rows·V f32 (checked above), d_counters 2·rows u32 and
        // out OUT_WORDS·rows u32, both fresh allocations distinct from the logits.
        let r = unsafe { ks::sample(&*self.dev, o, x, c, &launch) };
        self.ok("sample", &shapes, r);
        self.download_words(&out)
            .chunks_exact(OUT_WORDS)
            .map(|w| {
                let u = f64::from_bits(u64::from(w[3]) | u64::from(w[4]) << 32);
                let r = match w[2] {
                    status::OK => Ok(Sampled { token: w[0], logprob: f32::from_bits(w[1]) }),
                    status::NON_FINITE => Err(SampleError::NonFinite { token: w[0], value: f32::from_bits(w[1]) }),
                    status::ALL_MASKED => Err(SampleError::AllMasked),
                    status::TEMPERATURE_OVERFLOW => Err(SampleError::TemperatureOverflow { temperature: 1.0 / inv_t }),
                    s => panic!("sample ({shapes}) on {}: unknown status {s}", self.dev.describe()),
                };
                (r, u)
            })
            .collect()
    }
}
