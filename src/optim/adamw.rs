//! AdamW with global-norm gradient clipping, matching `torch.optim.AdamW` and
//! `torch.nn.utils.clip_grad_norm_`.

use crate::backend::{AdamWStep, Backend};
use crate::error::{Error, Result};
use crate::model::Gpt2;

/// AdamW hyperparameters (the learning rate comes from the schedule at each step).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay for matrices and embeddings (biases and norms get none).
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    /// GPT-2 fine-tuning defaults: betas (0.9, 0.95), eps 1e-8, weight decay 0.1.
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }
}

impl AdamWConfig {
    /// Rejects moments outside [0, 1), a non-positive eps and a negative or non-finite weight
    /// decay; the message names the field.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Invalid(format!("adamw: {m}")));
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{name} must be in [0, 1), got {b}"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad(format!("eps must be finite and > 0, got {}", self.eps));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight_decay must be finite and >= 0, got {}", self.weight_decay));
        }
        Ok(())
    }
}

/// What one optimizer step saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInfo {
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Factor the gradients were scaled by (1 when not clipped).
    pub clip_scale: f32,
}

/// The clip factor of `clip_grad_norm_`: `min(1, max_norm / (norm + 1e-6))`.
pub fn clip_scale(norm: f32, max_norm: Option<f32>) -> f32 {
    match max_norm {
        Some(max) if max > 0.0 => (max / (norm + 1e-6)).min(1.0),
        _ => 1.0,
    }
}

/// AdamW state for one model: two moments per parameter tensor and the step count.
pub struct AdamW<K: Backend> {
    /// Hyperparameters.
    pub config: AdamWConfig,
    m: Vec<K::Buf>,
    v: Vec<K::Buf>,
    decay: Vec<bool>,
    step: u64,
}

impl<K: Backend> AdamW<K> {
    /// Zero moments shaped like `model`'s parameters.
    pub fn new(model: &Gpt2<K>, config: AdamWConfig) -> Self {
        let k = model.backend();
        AdamW {
            config,
            m: model.specs().iter().map(|s| k.alloc(s.numel())).collect(),
            v: model.specs().iter().map(|s| k.alloc(s.numel())).collect(),
            decay: model.specs().iter().map(|s| s.decay).collect(),
            step: 0,
        }
    }

    /// Optimizer steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Clips the gradients to `max_grad_norm` (if given) and applies one AdamW update at
    /// learning rate `lr`. A non-finite gradient norm is an error and leaves the model as it was.
    pub fn step(&mut self, model: &mut Gpt2<K>, lr: f32, max_grad_norm: Option<f32>) -> Result<StepInfo> {
        let k = model.backend().clone();
        let grad_norm = {
            let grads =
                model.grads().ok_or_else(|| Error::Invalid("optimizer step before any backward pass".into()))?;
            k.global_norm(&grads.iter().collect::<Vec<_>>())
        };
        if !grad_norm.is_finite() {
            return Err(Error::Invalid(format!(
                "gradient norm is {grad_norm} at optimizer step {}; update skipped",
                self.step + 1
            )));
        }
        let scale = clip_scale(grad_norm, max_grad_norm);
        let (params, grads) = model.params_and_grads_mut().expect("the gradients exist (checked above)");
        self.step += 1;
        let c = self.config;
        for i in 0..params.len() {
            let h = AdamWStep {
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                weight_decay: if self.decay[i] { c.weight_decay } else { 0.0 },
                step: self.step,
                grad_scale: scale,
            };
            k.adamw(&mut params[i], &grads[i], &mut self.m[i], &mut self.v[i], h);
        }
        // In bf16 mixed precision the GEMMs read bf16 copies of the f32 masters just updated.
        model.sync_compute_weights();
        Ok(StepInfo { grad_norm, clip_scale: scale })
    }

    /// Host copies of (step, first moments, second moments), for checkpoints.
    pub fn to_host(&self, k: &K) -> (u64, Vec<Vec<f32>>, Vec<Vec<f32>>) {
        (self.step, self.m.iter().map(|b| k.download(b)).collect(), self.v.iter().map(|b| k.download(b)).collect())
    }

    /// Restores state saved by [`to_host`](Self::to_host); lengths must match the model.
    pub fn load_host(&mut self, k: &K, step: u64, m: &[Vec<f32>], v: &[Vec<f32>]) -> Result<()> {
        if m.len() != self.m.len() || v.len() != self.v.len() {
            return Err(Error::Invalid(format!("optimizer state has {} tensors, model has {}", m.len(), self.m.len())));
        }
        for (i, (hm, hv)) in m.iter().zip(v).enumerate() {
            if hm.len() != k.len(&self.m[i]) || hv.len() != k.len(&self.v[i]) {
                return Err(Error::Invalid(format!("optimizer state tensor {i} has the wrong length")));
            }
            k.write(&mut self.m[i], hm);
            k.write(&mut self.v[i], hv);
        }
        self.step = step;
        Ok(())
    }
}
