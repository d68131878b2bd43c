//! GPT-2 forward and backward, written once against the [`Backend`] op set (llm.c-style
//! explicit passes, no autograd).

use super::activations::{head_input, Activations};
use super::config::Gpt2Config;
use super::grn::{GrnConfig, Head};
use super::kv_cache::KvCache;
use super::params::{
    block, init_params, is_gemm_weight, ln_f, param_specs, policy_grn, BlockParam as P, ParamSpec, WPE, WTE,
};
use crate::backend::prelude::*;
use crate::backend::{
    Affine, AttentionShape, Btc, CachedShape, CrossEntropyShape, GrnCausalStats, GrnParams, GrnStepShape, KvBufs,
    LayerNormShape, LnStats, RowsC,
};
use crate::backend::{Backend, Gemm, GrnShape, SampleError, SampleParams, Sampled};
use crate::error::{Error, Result};

/// A GPT-2 language model whose parameters, gradients and activations live on backend `K`.
pub struct Gpt2<K: Backend> {
    backend: K,
    config: Gpt2Config,
    specs: Vec<ParamSpec>,
    /// The master weights (f32).
    params: Vec<K::Buf>,
    /// The GEMM weights' compute copies in bf16 mixed precision (`None` for the others, and
    /// for all in f32): what every product reads, refreshed from the masters by
    /// [`Gpt2::sync_compute_weights`].
    compute: Vec<Option<K::Buf>>,
    /// The masters changed (through [`Gpt2::params_and_grads_mut`]) since the compute copies
    /// were made: a pass would read stale weights, so it refuses.
    stale: bool,
    grads: Option<Vec<K::Buf>>,
    acts: Option<Activations<K>>,
    /// A KV cache kept between generate calls ([`Gpt2::take_kv_cache`]), so rollouts reuse
    /// its buffers instead of allocating a cache per call.
    spare_cache: Option<KvCache<K>>,
}

/// Token ids for a pass: host ids (checked, then written into the activations), or a range of
/// a device buffer the caller has checked (copied on the device: no upload, no allocation).
enum TokenIds<'a, K: Backend> {
    Host(&'a [u32]),
    Device { ids: &'a K::Ids, offset: usize },
}

/// What a custom head sees after [`Gpt2::forward_hidden`]: the hidden state and the tied
/// lm_head weight.
pub struct HiddenView<'a, K: Backend> {
    /// The model's backend.
    pub backend: &'a K,
    /// The lm_head's input (B·T, C): ln_f's output through the policy GRN when the model has
    /// one, else ln_f's output.
    pub hidden: &'a K::Buf,
    /// ln_f's output (B·T, C), before any policy GRN: what a separate head (a judge's score
    /// head) reads.
    pub final_hidden: &'a K::Buf,
    /// wte (V, C), which is also the lm_head.
    pub wte: &'a K::Buf,
}

/// What a custom head gets in [`Gpt2::forward_backward_with`]: the hidden state, the lm_head
/// weight, and the two gradients it produces.
pub struct HeadGrad<'a, K: Backend> {
    /// The model's backend.
    pub backend: &'a K,
    /// The lm_head's input (B·T, C) (see [`HiddenView::hidden`]).
    pub hidden: &'a K::Buf,
    /// wte (V, C), which is also the lm_head.
    pub wte: &'a K::Buf,
    /// d loss / d hidden (B·T, C), with respect to `hidden`: the head overwrites it.
    pub dhidden: &'a mut K::Buf,
    /// wte's gradient (V, C): the head adds the lm_head's share.
    pub dwte: &'a mut K::Buf,
}

/// Mutable parameters beside read-only gradients, in [`Gpt2::specs`] order.
pub type ParamsAndGrads<'a, K> = (&'a mut [<K as MemoryOps>::Buf], &'a [<K as MemoryOps>::Buf]);

/// The weight a GEMM reads for parameter `i`: its compute copy when it has one, else the
/// master (a free function so a pass can borrow it beside the gradients).
fn gemm_weight<'a, B: MemoryOps>(params: &'a [B::Buf], compute: &'a [Option<B::Buf>], i: usize) -> &'a B::Buf {
    compute.get(i).and_then(Option::as_ref).unwrap_or(&params[i])
}

/// Loss weights that average over the positions whose `mask` is true (all zero if none is).
pub fn mean_weights(mask: &[bool]) -> Vec<f32> {
    let n = mask.iter().filter(|&&m| m).count();
    let w = if n == 0 { 0.0 } else { 1.0 / n as f32 };
    mask.iter().map(|&m| if m { w } else { 0.0 }).collect()
}

impl<K: Backend> Gpt2<K> {
    /// A model holding `host` parameters, one `Vec` per entry of
    /// [`param_specs`], in that order.
    pub fn from_host(backend: K, config: Gpt2Config, host: &[Vec<f32>]) -> Result<Self> {
        config.validate().map_err(Error::Invalid)?;
        let specs = param_specs(&config);
        if host.len() != specs.len() {
            return Err(Error::Invalid(format!("expected {} parameter tensors, got {}", specs.len(), host.len())));
        }
        for (s, h) in specs.iter().zip(host) {
            if h.len() != s.numel() {
                return Err(Error::Invalid(format!(
                    "parameter `{}` has {} values, expected {} for shape {:?}",
                    s.name,
                    h.len(),
                    s.numel(),
                    s.shape
                )));
            }
        }
        let params = host.iter().map(|h| backend.upload(h)).collect();
        Ok(Self::with_params(backend, config, specs, params))
    }

    /// A model of these master weights, with its compute copies made and nothing else yet
    /// (no gradients, no activations).
    fn with_params(backend: K, config: Gpt2Config, specs: Vec<ParamSpec>, params: Vec<K::Buf>) -> Self {
        let mut m = Gpt2 {
            backend,
            config,
            specs,
            params,
            compute: Vec::new(),
            stale: true,
            grads: None,
            acts: None,
            spare_cache: None,
        };
        m.sync_compute_weights();
        m
    }

    /// A copy of the weights on the same backend, copied where they live (device to device on
    /// a GPU): no gradients, no activations. The DAPO trainer's frozen reference.
    pub fn weights_copy(&self) -> Self {
        let k = &self.backend;
        let params = self
            .params
            .iter()
            .map(|p| {
                let mut q = k.alloc(k.len(p));
                k.copy(&mut q, p);
                q
            })
            .collect();
        Self::with_params(k.clone(), self.config.clone(), self.specs.clone(), params)
    }

    /// Makes the GEMM weights' bf16 compute copies from the f32 masters (in bf16 mixed
    /// precision; nothing in f32): after an optimizer step, as llm.c refreshes its bf16
    /// weights. [`crate::optim::AdamW::step`] calls it; code that changes the weights through
    /// [`Gpt2::params_and_grads_mut`] itself must too, or the next pass refuses to run.
    pub fn sync_compute_weights(&mut self) {
        let k = &self.backend;
        let dtype = k.precision().dtype;
        self.compute.resize_with(self.params.len(), || None);
        for (i, (master, copy)) in self.params.iter().zip(&mut self.compute).enumerate() {
            if dtype == crate::backend::Dtype::F32 || !is_gemm_weight(&self.config, i) {
                *copy = None;
                continue;
            }
            let c = copy.get_or_insert_with(|| k.alloc_as(k.len(master), dtype));
            k.copy(c, master);
        }
        self.stale = false;
    }

    /// Refuses a pass while the compute copies are stale (see [`Gpt2::sync_compute_weights`]).
    fn check_fresh(&self) {
        assert!(!self.stale, "the weights changed through params_and_grads_mut without Gpt2::sync_compute_weights");
    }
    /// Frees the activations the last forward pass kept (they are reallocated by the next
    /// one): for a model that only runs forward passes now and then, like a frozen reference.
    pub fn release_activations(&mut self) {
        self.acts = None;
    }

    /// Swaps the kept activations with `other`'s when both models have the same architecture
    /// (else does nothing and returns false). The DAPO trainer lends the policy's buffers,
    /// already sized for the update's micro-batches, to the frozen reference for its pass and
    /// takes them back after it, so the two never hold activations side by side and neither
    /// allocates once they have reached the step's largest shape.
    pub fn swap_activations(&mut self, other: &mut Gpt2<K>) -> bool {
        let same = self.config == other.config;
        if same {
            std::mem::swap(&mut self.acts, &mut other.acts);
        }
        same
    }

    /// Sizes the activations (and, when `backward`, the backward buffers) for the largest
    /// (B, T) a run will use, so that no later pass of that size or smaller allocates:
    /// llm.c's allocate-once. Optional: passes grow the buffers on demand and never shrink them.
    pub fn reserve(&mut self, b: usize, t: usize, backward: bool) -> Result<()> {
        self.check_shape(b, t)?;
        let mut acts = self.acts_for(b, t);
        if backward {
            acts.ensure_grad(&self.backend, &self.config);
        }
        self.acts = Some(acts);
        Ok(())
    }

    /// A freshly initialised model (GPT-2's initialisation, seeded).
    pub fn random(backend: K, config: Gpt2Config, seed: u64) -> Result<Self> {
        config.validate().map_err(Error::Invalid)?;
        let host = init_params(&config, seed);
        Self::from_host(backend, config, &host)
    }

    /// Puts a zero-initialised causal GRN in front of the lm_head (γ = β = 0: the model's
    /// outputs do not change until it learns) with the settings of `grn`, unless the model
    /// already has one. Returns whether one was added. Gradients and activations are dropped
    /// (they are reallocated at the next pass), so an optimizer must be made after this.
    ///
    /// A model that has a policy GRN keeps it whatever `grn` says (its γ, β are part of the
    /// weights); only `eps` must agree, since changing it would change a trained GRN.
    pub fn add_policy_grn(&mut self, grn: GrnConfig) -> Result<bool> {
        grn.validate()?;
        if self.config.grn.applies_to(Head::Policy) {
            if self.config.grn.eps != grn.eps {
                return Err(Error::Invalid(format!(
                    "the model's policy GRN has eps = {} but the settings ask for grn.eps = {}",
                    self.config.grn.eps, grn.eps
                )));
            }
            return Ok(false);
        }
        let mut config = self.config.clone();
        config.grn = GrnConfig { enabled: true, apply_to_policy: true, ..grn };
        let specs = param_specs(&config);
        let c = config.n_embd;
        for _ in self.specs.len()..specs.len() {
            self.params.push(self.backend.alloc(c));
            self.compute.push(None);
        }
        (self.config, self.specs, self.grads, self.acts, self.spare_cache) = (config, specs, None, None, None);
        Ok(true)
    }

    /// Whether a causal GRN sits in front of the lm_head.
    pub fn has_policy_grn(&self) -> bool {
        policy_grn(&self.config).is_some()
    }

    /// The architecture.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The backend the model computes on.
    pub fn backend(&self) -> &K {
        &self.backend
    }

    /// Parameter names and shapes, in storage order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.specs.iter().map(|s| s.numel()).sum()
    }

    /// The parameter buffers, in [`specs`](Self::specs) order.
    pub fn params(&self) -> &[K::Buf] {
        &self.params
    }

    /// The gradient buffers (allocated at the first backward pass).
    pub fn grads(&self) -> Option<&[K::Buf]> {
        self.grads.as_deref()
    }

    /// Parameters and gradients together, for an optimizer step. In bf16 mixed precision the
    /// GEMMs read compute copies of the weights: call [`Gpt2::sync_compute_weights`] after
    /// changing them (the next pass refuses to run until then).
    pub fn params_and_grads_mut(&mut self) -> Option<ParamsAndGrads<'_, K>> {
        let g = self.grads.as_deref()?;
        self.stale = self.compute.iter().any(Option::is_some);
        Some((&mut self.params, g))
    }

    fn index(&self, name: &str) -> Option<usize> {
        let name = name.strip_prefix("transformer.").unwrap_or(name);
        let name = if name == "lm_head.weight" { "wte.weight" } else { name };
        self.specs.iter().position(|s| s.name == name)
    }

    /// A host copy of the parameter with this HF name (with or without `transformer.`;
    /// `lm_head.weight` is the tied `wte.weight`).
    pub fn param(&self, name: &str) -> Option<Vec<f32>> {
        self.index(name).map(|i| self.backend.download(&self.params[i]))
    }

    /// A host copy of the gradient of the parameter with this HF name, if any backward pass ran.
    pub fn grad(&self, name: &str) -> Option<Vec<f32>> {
        let i = self.index(name)?;
        self.grads.as_ref().map(|g| self.backend.download(&g[i]))
    }

    /// Overwrites the parameter with this HF name from host values of the same length.
    pub fn set_param(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let i = self.index(name).ok_or_else(|| Error::Invalid(format!("no parameter named `{name}`")))?;
        if values.len() != self.specs[i].numel() {
            return Err(Error::Invalid(format!(
                "`{name}` needs {} values, got {}",
                self.specs[i].numel(),
                values.len()
            )));
        }
        self.backend.write(&mut self.params[i], values);
        if let Some(c) = self.compute.get_mut(i).and_then(Option::as_mut) {
            self.backend.copy(c, &self.params[i]);
        }
        Ok(())
    }

    /// Host copies of every parameter, in [`specs`](Self::specs) order.
    pub fn to_host(&self) -> Vec<Vec<f32>> {
        self.params.iter().map(|p| self.backend.download(p)).collect()
    }

    /// Zeroes every gradient (allocating them on first use).
    pub fn zero_grad(&mut self) {
        match &mut self.grads {
            Some(g) => g.iter_mut().for_each(|g| self.backend.zero(g)),
            None => self.grads = Some(self.specs.iter().map(|s| self.backend.alloc(s.numel())).collect()),
        }
    }

    /// Multiplies every parameter gradient by `factor` (gradient accumulation with unequal
    /// micro-batch weights). Does nothing before the first backward pass.
    pub fn scale_grads(&mut self, factor: f32) {
        if let Some(g) = &mut self.grads {
            g.iter_mut().for_each(|g| self.backend.scale(g, factor));
        }
    }

    fn check_shape(&self, b: usize, t: usize) -> Result<()> {
        if b == 0 || t == 0 {
            return Err(Error::Invalid(format!("empty batch: B={b}, T={t}")));
        }
        if t > self.config.n_positions {
            return Err(Error::Invalid(format!(
                "sequence length {t} exceeds the model's n_positions {}",
                self.config.n_positions
            )));
        }
        Ok(())
    }

    fn check_ids(&self, what: &str, ids: &[u32], b: usize, t: usize) -> Result<()> {
        self.check_shape(b, t)?;
        if ids.len() != b * t {
            return Err(Error::Invalid(format!("{what}: got {} token ids, expected B·T = {b}·{t}", ids.len())));
        }
        if let Some((i, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= self.config.vocab_size) {
            return Err(Error::Invalid(format!(
                "{what}: token id {id} at position {i} is out of range for vocab_size {}",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// Runs the forward pass to logits for `ids (B,T)`; read them with [`logits`](Self::logits).
    pub fn forward(&mut self, ids: &[u32], b: usize, t: usize) -> Result<()> {
        let mut acts = self.take_acts(TokenIds::Host(ids), b, t)?;
        acts.ensure_logits(&self.backend, &self.config);
        self.forward_body(&mut acts);
        self.lm_head(&mut acts);
        self.acts = Some(acts);
        Ok(())
    }

    /// The activations for (B,T) with `ids` written in, taken out of `self` for a pass.
    fn take_acts(&mut self, ids: TokenIds<'_, K>, b: usize, t: usize) -> Result<Activations<K>> {
        self.check_fresh();
        let k = &self.backend;
        match ids {
            TokenIds::Host(ids) => self.check_ids("input", ids, b, t)?,
            TokenIds::Device { ids, offset } => {
                self.check_shape(b, t)?;
                if offset + b * t > k.ids_len(ids) {
                    return Err(Error::Invalid(format!(
                        "input: ids {offset}..{} of a buffer of {}",
                        offset + b * t,
                        k.ids_len(ids)
                    )));
                }
            }
        }
        let mut acts = self.acts_for(b, t);
        let k = &self.backend;
        match ids {
            TokenIds::Host(ids) => k.write_ids(&mut acts.ids, ids),
            TokenIds::Device { ids, offset } => k.copy_ids_range(&mut acts.ids, 0, ids, offset, b * t),
        }
        Ok(acts)
    }

    /// The kept activations moved to (B,T) (made on first use), taken out of `self`.
    fn acts_for(&mut self, b: usize, t: usize) -> Activations<K> {
        match self.acts.take() {
            Some(mut a) => {
                a.reshape(&self.backend, &self.config, b, t);
                a
            }
            None => Activations::new(&self.backend, &self.config, b, t),
        }
    }

    /// The forward pass up to the final layer norm, then `head(view)`: for heads that compute
    /// their own outputs from the hidden state (the chunked RL objective's log-probs, a scalar
    /// judge head) without the (B,T,V) logits. No gradients.
    pub fn forward_hidden<R>(
        &mut self,
        ids: &[u32],
        b: usize,
        t: usize,
        head: impl FnOnce(HiddenView<'_, K>) -> R,
    ) -> Result<R> {
        self.forward_hidden_impl(TokenIds::Host(ids), b, t, head)
    }

    /// [`Gpt2::forward_hidden`] on ids `offset .. offset + B·T` of a device buffer, copied
    /// where they live. The ids are not checked against the vocabulary (the embedding would
    /// read out of bounds): the caller checked them on the host before uploading them.
    pub(crate) fn forward_hidden_on_device<R>(
        &mut self,
        (ids, offset): (&K::Ids, usize),
        b: usize,
        t: usize,
        head: impl FnOnce(HiddenView<'_, K>) -> R,
    ) -> Result<R> {
        self.forward_hidden_impl(TokenIds::Device { ids, offset }, b, t, head)
    }

    fn forward_hidden_impl<R>(
        &mut self,
        ids: TokenIds<'_, K>,
        b: usize,
        t: usize,
        head: impl FnOnce(HiddenView<'_, K>) -> R,
    ) -> Result<R> {
        let mut acts = self.take_acts(ids, b, t)?;
        self.forward_body(&mut acts);
        let r = head(HiddenView {
            backend: &self.backend,
            hidden: acts.head_input(),
            final_hidden: &acts.lnf,
            wte: gemm_weight::<K>(&self.params, &self.compute, WTE),
        });
        self.acts = Some(acts);
        Ok(r)
    }

    /// Forward to the hidden state, a custom head's loss and gradient, then the backward pass
    /// through the whole model: `head` must **overwrite** `dhidden` (B·T, C) with d loss /
    /// d hidden and may **accumulate** into `dwte` (the tied lm_head's gradient). Every
    /// parameter's gradient is **added** to, as in [`forward_backward`](Self::forward_backward).
    /// If `head` fails, no gradient is touched.
    pub fn forward_backward_with<R>(
        &mut self,
        ids: &[u32],
        b: usize,
        t: usize,
        head: impl FnOnce(HeadGrad<'_, K>) -> Result<R>,
    ) -> Result<R> {
        self.forward_backward_impl(TokenIds::Host(ids), b, t, head)
    }

    /// [`Gpt2::forward_backward_with`] on ids `offset .. offset + B·T` of a device buffer, as
    /// [`Gpt2::forward_hidden_on_device`] takes them (checked by the caller).
    pub(crate) fn forward_backward_on_device<R>(
        &mut self,
        (ids, offset): (&K::Ids, usize),
        b: usize,
        t: usize,
        head: impl FnOnce(HeadGrad<'_, K>) -> Result<R>,
    ) -> Result<R> {
        self.forward_backward_impl(TokenIds::Device { ids, offset }, b, t, head)
    }

    fn forward_backward_impl<R>(
        &mut self,
        ids: TokenIds<'_, K>,
        b: usize,
        t: usize,
        head: impl FnOnce(HeadGrad<'_, K>) -> Result<R>,
    ) -> Result<R> {
        let mut acts = self.take_acts(ids, b, t)?;
        self.forward_body(&mut acts);
        if self.grads.is_none() {
            self.zero_grad();
        }
        acts.ensure_grad(&self.backend, &self.config);
        let g = self.grads.as_mut().expect("allocated above");
        let hidden = head_input(&acts.grn, &acts.lnf);
        let s = acts.grad.as_mut().expect("allocated above");
        let view = HeadGrad {
            backend: &self.backend,
            hidden,
            wte: gemm_weight::<K>(&self.params, &self.compute, WTE),
            dhidden: &mut s.dbtc,
            dwte: &mut g[WTE],
        };
        let out = head(view);
        if out.is_ok() {
            self.backward_body(&mut acts);
        }
        self.acts = Some(acts);
        out
    }

    /// The logits (B,T,V) of the last [`forward`](Self::forward), as a host copy.
    pub fn logits(&self) -> Option<Vec<f32>> {
        self.acts.as_ref().map(|a| self.backend.download(&a.logits))
    }

    /// Forward pass plus the weighted cross-entropy `Σ w·(−log p(target))`, without gradients.
    /// With [`mean_weights`] this is the mean next-token loss over the chosen positions.
    pub fn loss(&mut self, ids: &[u32], targets: &[u32], weights: &[f32], b: usize, t: usize) -> Result<f32> {
        self.forward(ids, b, t)?;
        self.loss_on_logits(targets, weights, false)
    }

    /// Forward, loss and backward: **adds** this batch's gradient to every parameter's
    /// gradient (call [`zero_grad`](Self::zero_grad) between optimizer steps) and returns the
    /// loss. Weights scale each position's loss; they should sum to 1 across all micro-batches
    /// of one step for a mean.
    pub fn forward_backward(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        weights: &[f32],
        b: usize,
        t: usize,
    ) -> Result<f32> {
        self.forward(ids, b, t)?;
        let loss = self.loss_on_logits(targets, weights, true)?;
        if self.grads.is_none() {
            self.zero_grad();
        }
        let mut acts = self.acts.take().expect("forward ran");
        acts.ensure_grad(&self.backend, &self.config);
        self.lm_head_backward(&mut acts);
        self.backward_body(&mut acts);
        self.acts = Some(acts);
        Ok(loss)
    }

    fn loss_on_logits(&mut self, targets: &[u32], weights: &[f32], backward: bool) -> Result<f32> {
        let acts = self.acts.as_mut().expect("forward ran");
        let (b, t) = (acts.b, acts.t);
        if targets.len() != b * t || weights.len() != b * t {
            return Err(Error::Invalid(format!(
                "got {} targets and {} weights, expected B·T = {}",
                targets.len(),
                weights.len(),
                b * t
            )));
        }
        if let Some((i, w)) = weights.iter().enumerate().find(|(_, w)| !w.is_finite()) {
            return Err(Error::Invalid(format!("loss weight {w} at position {i} is not finite")));
        }
        let v = self.config.vocab_size;
        if let Some((i, &id)) = targets.iter().enumerate().find(|(i, &id)| id as usize >= v && weights[*i] != 0.0) {
            return Err(Error::Invalid(format!(
                "target token id {id} at position {i} is out of range for vocab_size {v}"
            )));
        }
        // Positions with zero weight may carry any placeholder (e.g. an ignore index); clamp
        // them so the kernel never indexes outside a row.
        let clamped: Vec<u32> = targets.iter().map(|&id| if id as usize >= v { 0 } else { id }).collect();
        let k = &self.backend;
        k.write_ids(&mut acts.targets, &clamped);
        k.write(&mut acts.weights, weights);
        k.cross_entropy(
            &mut acts.logits,
            &mut acts.losses,
            &acts.targets,
            &acts.weights,
            CrossEntropyShape { n: b * t, v },
            backward,
        );
        Ok(k.download(&acts.losses).iter().map(|&x| x as f64).sum::<f64>() as f32)
    }

    /// Embeddings, the blocks, ln_f and the policy GRN: `a.lnf` holds the hidden state
    /// (B,T,C), [`Activations::head_input`] the lm_head's input.
    fn forward_body(&self, a: &mut Activations<K>) {
        let k = &self.backend;
        let cfg = &self.config;
        let (b, t, c, nh) = (a.b, a.t, cfg.n_embd, cfg.n_head);
        let n = b * t;
        let p = &self.params;
        let eps = cfg.layer_norm_epsilon;
        k.encoder_forward(&mut a.encoded, &a.ids, &p[WTE], &p[WPE], Btc { b, t, c });
        for l in 0..cfg.n_layer {
            let (prev, rest) = a.blocks.split_at_mut(l);
            let input = if l == 0 { &a.encoded } else { &prev[l - 1].res3 };
            let x = &mut rest[0];
            let w = |q: P| gemm_weight::<K>(p, &self.compute, block(l, q));
            k.layernorm_forward(
                &mut x.ln1,
                LnStats { mean: &mut x.ln1_mean, rstd: &mut x.ln1_rstd },
                input,
                Affine { w: w(P::Ln1W), b: w(P::Ln1B) },
                LayerNormShape { n, c, eps },
            );
            k.matmul(&mut x.qkv, &x.ln1, w(P::QkvW), Some(w(P::QkvB)), Gemm::nn(n, 3 * c, c));
            k.attention_forward(&mut x.atty, &mut x.lse, &x.qkv, AttentionShape { b, t, nh, c });
            // res2 = input + atty·W + bias: the projection accumulates onto a copy of the
            // residual stream, so no separate projection buffer is needed.
            k.copy(&mut x.res2, input);
            k.matmul(&mut x.res2, &x.atty, w(P::AttnProjW), Some(w(P::AttnProjB)), Gemm::nn(n, c, c).acc());
            k.layernorm_forward(
                &mut x.ln2,
                LnStats { mean: &mut x.ln2_mean, rstd: &mut x.ln2_rstd },
                &x.res2,
                Affine { w: w(P::Ln2W), b: w(P::Ln2B) },
                LayerNormShape { n, c, eps },
            );
            k.matmul(&mut x.fch, &x.ln2, w(P::FcW), Some(w(P::FcB)), Gemm::nn(n, 4 * c, c));
            k.gelu_forward(&mut x.fch_gelu, &x.fch);
            k.copy(&mut x.res3, &x.res2);
            k.matmul(&mut x.res3, &x.fch_gelu, w(P::FcProjW), Some(w(P::FcProjB)), Gemm::nn(n, c, 4 * c).acc());
        }
        let last = a.blocks.last().map(|x| &x.res3).unwrap_or(&a.encoded);
        let f = ln_f(cfg.n_layer);
        k.layernorm_forward(
            &mut a.lnf,
            LnStats { mean: &mut a.lnf_mean, rstd: &mut a.lnf_rstd },
            last,
            Affine { w: &p[f], b: &p[f + 1] },
            LayerNormShape { n, c, eps },
        );
        if let (Some(i), Some(x)) = (policy_grn(cfg), a.grn.as_mut()) {
            let gs = GrnShape { b, t, c, eps: cfg.grn.eps };
            k.grn_causal_forward(
                &mut x.out,
                GrnCausalStats { g: &mut x.g, mean: &mut x.mean },
                &a.lnf,
                GrnParams { gamma: &p[i], beta: &p[i + 1] },
                gs,
            );
        }
    }

    /// logits (N,V) = lnf (N,C) · wteᵀ: the lm_head is tied to the token embedding.
    fn lm_head(&self, a: &mut Activations<K>) {
        let (n, c, v) = (a.b * a.t, self.config.n_embd, self.config.vocab_size);
        let hidden = head_input(&a.grn, &a.lnf);
        let wte = gemm_weight::<K>(&self.params, &self.compute, WTE);
        self.backend.matmul(&mut a.logits, hidden, wte, None, Gemm::nt(n, v, c));
    }

    /// From d loss / d logits in `a.logits` (the fused loss wrote it): the tied lm_head's
    /// gradient into wte, and d loss / d hidden into the scratch `dbtc`.
    fn lm_head_backward(&mut self, a: &mut Activations<K>) {
        let k = &self.backend;
        let (n, c, v) = (a.b * a.t, self.config.n_embd, self.config.vocab_size);
        let g = self.grads.as_mut().expect("allocated by forward_backward");
        let s = a.grad.as_mut().expect("allocated by ensure_grad");
        // Tied lm_head: wte collects gradient from the logits here and from the encoder below.
        let hidden = head_input(&a.grn, &a.lnf);
        k.matmul(&mut g[WTE], &a.logits, hidden, None, Gemm::tn(v, c, n).acc());
        k.matmul(&mut s.dbtc, &a.logits, gemm_weight::<K>(&self.params, &self.compute, WTE), None, Gemm::nn(n, c, v));
    }

    /// The backward pass from d loss / d (lm_head input) (in the scratch `dbtc`) through the
    /// policy GRN, ln_f, the blocks and the embeddings, adding into every parameter's gradient.
    fn backward_body(&mut self, a: &mut Activations<K>) {
        let k = &self.backend;
        let cfg = &self.config;
        let (b, t, c, nh) = (a.b, a.t, cfg.n_embd, cfg.n_head);
        let n = b * t;
        let p = &self.params;
        let g = self.grads.as_mut().expect("allocated by forward_backward");
        let s = a.grad.as_mut().expect("allocated by ensure_grad");
        let f = ln_f(cfg.n_layer);
        if let (Some(i), Some(x)) = (policy_grn(cfg), a.grn.as_ref()) {
            // d loss / d GRN output → d loss / d ln_f output, which continues in dbtc.
            let gs = GrnShape { b, t, c, eps: cfg.grn.eps };
            let (dgamma, dbeta) = two_mut(g, i, i + 1);
            k.grn_causal_backward(
                &mut s.dgrn,
                GrnParams { gamma: dgamma, beta: dbeta },
                &s.dbtc,
                &a.lnf,
                &p[i],
                GrnCausalStats { g: &x.g, mean: &x.mean },
                gs,
            );
            std::mem::swap(&mut s.dgrn, &mut s.dbtc);
        }
        // Layer norm accumulates into its input gradient (it is the residual stream's), so
        // the stream's gradient starts from zero here.
        k.zero(&mut s.dres);
        let last = a.blocks.last().map(|x| &x.res3).unwrap_or(&a.encoded);
        {
            let (gw, gb) = two_mut(g, f, f + 1);
            k.layernorm_backward(
                &mut s.dres,
                Affine { w: gw, b: gb },
                &s.dbtc,
                last,
                &p[f],
                LnStats { mean: &a.lnf_mean, rstd: &a.lnf_rstd },
                LayerNormShape { n, c, eps: 0.0 },
            );
        }
        for l in (0..cfg.n_layer).rev() {
            let input = if l == 0 { &a.encoded } else { &a.blocks[l - 1].res3 };
            let x = &a.blocks[l];
            let w = |q: P| gemm_weight::<K>(p, &self.compute, block(l, q));
            let gi = |q: P| block(l, q);
            // MLP: res3 = res2 + gelu(ln2·Wfc + bfc)·Wproj + bproj; dres flows to both terms.
            k.matmul(&mut g[gi(P::FcProjW)], &x.fch_gelu, &s.dres, None, Gemm::tn(4 * c, c, n).acc());
            k.bias_backward(&mut g[gi(P::FcProjB)], &s.dres, n, c);
            k.matmul(&mut s.d4c, &s.dres, w(P::FcProjW), None, Gemm::nt(n, 4 * c, c));
            k.gelu_backward(&mut s.d4c, &x.fch);
            k.matmul(&mut g[gi(P::FcW)], &x.ln2, &s.d4c, None, Gemm::tn(c, 4 * c, n).acc());
            k.bias_backward(&mut g[gi(P::FcB)], &s.d4c, n, 4 * c);
            k.matmul(&mut s.dbtc, &s.d4c, w(P::FcW), None, Gemm::nt(n, c, 4 * c));
            {
                let (gw, gb) = two_mut(g, gi(P::Ln2W), gi(P::Ln2B));
                k.layernorm_backward(
                    &mut s.dres,
                    Affine { w: gw, b: gb },
                    &s.dbtc,
                    &x.res2,
                    w(P::Ln2W),
                    LnStats { mean: &x.ln2_mean, rstd: &x.ln2_rstd },
                    LayerNormShape { n, c, eps: 0.0 },
                );
            }
            // Attention: res2 = input + attn(ln1(input))·Wproj + bproj.
            k.matmul(&mut g[gi(P::AttnProjW)], &x.atty, &s.dres, None, Gemm::tn(c, c, n).acc());
            k.bias_backward(&mut g[gi(P::AttnProjB)], &s.dres, n, c);
            k.matmul(&mut s.dbtc, &s.dres, w(P::AttnProjW), None, Gemm::nt(n, c, c));
            k.attention_backward(&mut s.dqkv, &s.dbtc, &x.qkv, &x.atty, &x.lse, AttentionShape { b, t, nh, c });
            k.matmul(&mut g[gi(P::QkvW)], &x.ln1, &s.dqkv, None, Gemm::tn(c, 3 * c, n).acc());
            k.bias_backward(&mut g[gi(P::QkvB)], &s.dqkv, n, 3 * c);
            k.matmul(&mut s.dbtc, &s.dqkv, w(P::QkvW), None, Gemm::nt(n, c, 3 * c));
            {
                let (gw, gb) = two_mut(g, gi(P::Ln1W), gi(P::Ln1B));
                k.layernorm_backward(
                    &mut s.dres,
                    Affine { w: gw, b: gb },
                    &s.dbtc,
                    input,
                    w(P::Ln1W),
                    LnStats { mean: &x.ln1_mean, rstd: &x.ln1_rstd },
                    LayerNormShape { n, c, eps: 0.0 },
                );
            }
        }
        let (gwte, gwpe) = two_mut(g, WTE, WPE);
        k.encoder_backward(gwte, gwpe, &s.dres, &a.ids, Btc { b, t, c });
    }
}

/// Two distinct mutable elements of a slice (`i < j`).
fn two_mut<T>(xs: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    debug_assert!(i < j);
    let (lo, hi) = xs.split_at_mut(j);
    (&mut lo[i], &mut hi[0])
}

/// KV-cache generation: a prefill of the prompts, then one decode step per new token. The
/// passes run the same per-layer ops as [`Gpt2::forward`], with [`AttentionOps::attention_cached`]
/// in place of the training attention, and keep nothing for a backward pass.
impl<K: Backend> Gpt2<K> {
    /// An empty KV cache for `b` sequences of up to `t_max` positions (at most n_positions).
    /// It holds 2 · n_layer · B · T_max · C values.
    pub fn kv_cache(&self, b: usize, t_max: usize) -> Result<KvCache<K>> {
        self.check_kv_shape(b, t_max)?;
        Ok(KvCache::new(&self.backend, &self.config, b, t_max))
    }

    fn check_kv_shape(&self, b: usize, t_max: usize) -> Result<()> {
        if b == 0 || t_max == 0 {
            return Err(Error::Invalid(format!("empty KV cache: B={b}, T_max={t_max}")));
        }
        if t_max > self.config.n_positions {
            return Err(Error::Invalid(format!(
                "KV cache length {t_max} exceeds the model's n_positions {}",
                self.config.n_positions
            )));
        }
        Ok(())
    }

    /// [`Gpt2::kv_cache`], made from the cache last handed back with
    /// [`Gpt2::keep_kv_cache`] when there is one: its buffers move to (B, T_max) and allocate
    /// only past their capacity, and its row scratch (sized by the largest prefill) serves
    /// the new prefill and decode steps. Rollouts take a cache per generate call and keep it
    /// after, so a run allocates its cache once.
    pub fn take_kv_cache(&mut self, b: usize, t_max: usize) -> Result<KvCache<K>> {
        match self.spare_cache.take() {
            Some(mut cache) => {
                self.check_kv_shape(b, t_max)?;
                cache.reshape(&self.backend, &self.config, b, t_max);
                Ok(cache)
            }
            None => self.kv_cache(b, t_max),
        }
    }

    /// Keeps `cache` for the next [`Gpt2::take_kv_cache`]. Its device memory stays held
    /// between generate calls (2 · n_layer · B · T_max · C values plus the row scratch).
    pub fn keep_kv_cache(&mut self, cache: KvCache<K>) {
        self.spare_cache = Some(cache);
    }

    /// Runs every prompt through the model, filling sequence i of the cache with prompt i
    /// (B = `prompts.len()` must equal the cache's batch; anything cached before is
    /// discarded). Returns the logits (B,V) at each prompt's last position: the distribution
    /// of its first new token. Prompts are packed back to back, so ragged lengths cost no
    /// padding.
    pub fn prefill(&self, cache: &mut KvCache<K>, prompts: &[Vec<u32>]) -> Result<Vec<f32>> {
        self.prefill_in_cache(cache, prompts)?;
        Ok(self.cached_logits(cache))
    }

    /// [`Gpt2::prefill`] without the download: the logits stay in the cache's buffers for
    /// [`Gpt2::sample_in_cache`] (or [`Gpt2::cached_logits`]).
    pub fn prefill_in_cache(&self, cache: &mut KvCache<K>, prompts: &[Vec<u32>]) -> Result<()> {
        if prompts.len() != cache.b {
            return Err(Error::Invalid(format!("{} prompts for a KV cache of {} sequences", prompts.len(), cache.b)));
        }
        let (mut ids, mut seq, mut pos, mut last) = (vec![], vec![], vec![], vec![]);
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() || p.len() > cache.t_max {
                return Err(Error::Invalid(format!(
                    "prompt {i} has {} tokens; a prompt needs 1 to {} (the KV cache's length)",
                    p.len(),
                    cache.t_max
                )));
            }
            self.check_token_ids(&format!("prompt {i}"), p)?;
            ids.extend_from_slice(p);
            seq.extend(std::iter::repeat(i as u32).take(p.len()));
            pos.extend(0..p.len() as u32);
            last.push(ids.len() - 1);
        }
        cache.lens.iter_mut().zip(prompts).for_each(|(l, p)| *l = p.len());
        if let Some(sums) = cache.grn_sumsq.as_mut() {
            self.backend.zero(sums);
        }
        self.forward_rows(cache, &ids, &seq, &pos, &last);
        Ok(())
    }

    /// Feeds `tokens[j]` to sequence `seqs[j]` at its next position (after its prompt and the
    /// tokens fed before) and returns the logits (len, V) there, row j for `seqs[j]`.
    /// Sequences not listed (finished ones) cost nothing. `seqs` must be distinct.
    pub fn decode_step(&self, cache: &mut KvCache<K>, seqs: &[usize], tokens: &[u32]) -> Result<Vec<f32>> {
        self.decode_in_cache(cache, seqs, tokens)?;
        Ok(self.cached_logits(cache))
    }

    /// [`Gpt2::decode_step`] without the download: the logits stay in the cache's buffers.
    pub fn decode_in_cache(&self, cache: &mut KvCache<K>, seqs: &[usize], tokens: &[u32]) -> Result<()> {
        if seqs.is_empty() || seqs.len() != tokens.len() {
            return Err(Error::Invalid(format!(
                "decode step with {} sequences and {} tokens (need the same, non-zero number)",
                seqs.len(),
                tokens.len()
            )));
        }
        let mut seen = vec![false; cache.b];
        for &s in seqs {
            if s >= cache.b || std::mem::replace(&mut seen[s], true) {
                return Err(Error::Invalid(format!(
                    "decode step: sequence {s} is out of range for a KV cache of {} or listed twice",
                    cache.b
                )));
            }
            if cache.lens[s] == 0 || cache.lens[s] >= cache.t_max {
                return Err(Error::Invalid(format!(
                    "decode step: sequence {s} has {} cached positions; it needs a prefill and room below {}",
                    cache.lens[s], cache.t_max
                )));
            }
        }
        self.check_token_ids("decode step", tokens)?;
        let seq: Vec<u32> = seqs.iter().map(|&s| s as u32).collect();
        let pos: Vec<u32> = seqs.iter().map(|&s| cache.lens[s] as u32).collect();
        seqs.iter().for_each(|&s| cache.lens[s] += 1);
        let all: Vec<usize> = (0..seqs.len()).collect();
        self.forward_rows(cache, tokens, &seq, &pos, &all);
        Ok(())
    }

    /// A host copy of the logits (S,V) of the cache's last prefill or decode step. Panics
    /// if there was none.
    pub fn cached_logits(&self, cache: &KvCache<K>) -> Vec<f32> {
        let s = cache.scratch.as_ref().expect("a prefill or decode step ran on this cache");
        self.backend.download(&s.logits)
    }

    /// Draws one token from each row of the last step's logits where they live (row r with
    /// the counter `counters[r]` = [sequence, position]); see [`SamplingOps::sample`]. Panics if
    /// no step ran or `counters` has more rows than that step's logits.
    pub fn sample_in_cache(
        &self,
        cache: &KvCache<K>,
        counters: &[[u32; 2]],
        params: SampleParams,
    ) -> Vec<std::result::Result<Sampled, SampleError>> {
        let s = cache.scratch.as_ref().expect("a prefill or decode step ran on this cache");
        assert!(counters.len() <= s.out_rows, "{} counters for {} rows of logits", counters.len(), s.out_rows);
        self.backend.sample(&s.logits, self.config.vocab_size, counters, params)
    }

    fn check_token_ids(&self, what: &str, ids: &[u32]) -> Result<()> {
        let v = self.config.vocab_size;
        match ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
            Some((i, id)) => {
                Err(Error::Invalid(format!("{what}: token id {id} at position {i} is out of range for vocab_size {v}")))
            }
            None => Ok(()),
        }
    }

    /// One cached pass over rows (ids, seq, pos), validated by the caller; leaves the logits
    /// (S,V) of rows `out` (S of them, in that order) in the cache's scratch.
    fn forward_rows(&self, cache: &mut KvCache<K>, ids: &[u32], seq: &[u32], pos: &[u32], out: &[usize]) {
        self.check_fresh();
        let k = &self.backend;
        let cfg = &self.config;
        let (r, c, nh, v) = (ids.len(), cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let p = &self.params;
        let eps = cfg.layer_norm_epsilon;
        let t_max = cache.t_max;
        cache.scratch(k, cfg, r, out.len());
        let KvCache { k: kc, v: vc, scratch, grn_sumsq, .. } = cache;
        let s = scratch.as_mut().expect("allocated above");
        k.write_ids(&mut s.ids, ids);
        k.write_ids(&mut s.seq, seq);
        k.write_ids(&mut s.pos, pos);
        k.encoder_forward_at(&mut s.x, &s.ids, &s.pos, &p[WTE], &p[WPE], RowsC { rows: r, c });
        for l in 0..cfg.n_layer {
            let w = |q: P| gemm_weight::<K>(p, &self.compute, block(l, q));
            k.layernorm_forward(
                &mut s.ln,
                LnStats { mean: &mut s.mean, rstd: &mut s.rstd },
                &s.x,
                Affine { w: w(P::Ln1W), b: w(P::Ln1B) },
                LayerNormShape { n: r, c, eps },
            );
            k.matmul(&mut s.qkv, &s.ln, w(P::QkvW), Some(w(P::QkvB)), Gemm::nn(r, 3 * c, c));
            k.attention_cached(
                &mut s.atty,
                KvBufs { k: &mut kc[l], v: &mut vc[l] },
                &s.qkv,
                &s.seq,
                &s.pos,
                CachedShape { rows: r, t_max, nh, c },
            );
            // x += atty·W + bias: the same sum forward_body forms on a copy of the residual.
            k.matmul(&mut s.x, &s.atty, w(P::AttnProjW), Some(w(P::AttnProjB)), Gemm::nn(r, c, c).acc());
            k.layernorm_forward(
                &mut s.ln,
                LnStats { mean: &mut s.mean, rstd: &mut s.rstd },
                &s.x,
                Affine { w: w(P::Ln2W), b: w(P::Ln2B) },
                LayerNormShape { n: r, c, eps },
            );
            k.matmul(&mut s.fch, &s.ln, w(P::FcW), Some(w(P::FcB)), Gemm::nn(r, 4 * c, c));
            k.gelu_forward(&mut s.fch_gelu, &s.fch);
            k.matmul(&mut s.x, &s.fch_gelu, w(P::FcProjW), Some(w(P::FcProjB)), Gemm::nn(r, c, 4 * c).acc());
        }
        let f = ln_f(cfg.n_layer);
        k.layernorm_forward(
            &mut s.lnf,
            LnStats { mean: &mut s.mean, rstd: &mut s.rstd },
            &s.x,
            Affine { w: &p[f], b: &p[f + 1] },
            LayerNormShape { n: r, c, eps },
        );
        // The policy GRN runs on every row, in order, so each sequence's running sums take in
        // every position (prompt tokens included) as the full forward's prefix sums do.
        let head_in = match (policy_grn(cfg), grn_sumsq.as_mut()) {
            (Some(i), Some(sums)) => {
                k.grn_causal_step(
                    &mut s.grn,
                    sums,
                    &s.lnf,
                    &s.seq,
                    GrnParams { gamma: &p[i], beta: &p[i + 1] },
                    GrnStepShape { rows: r, c, eps: cfg.grn.eps },
                );
                &s.grn
            }
            _ => &s.lnf,
        };
        // Only the wanted rows go through the (C → V) lm_head: a prefill needs one row per
        // prompt, not one per prompt token.
        let hidden = if out.iter().copied().eq(0..r) {
            head_in
        } else {
            for (j, &row) in out.iter().enumerate() {
                k.copy_range(&mut s.sel, j * c, head_in, row * c, c);
            }
            &s.sel
        };
        k.matmul(&mut s.logits, hidden, gemm_weight::<K>(p, &self.compute, WTE), None, Gemm::nt(out.len(), v, c));
    }
}
