//! The parameter list of GPT-2: names (transformers' names without the `transformer.`
//! prefix), shapes as stored in HF checkpoints (Conv1D weights are [in, out]), and the
//! initialisation GPT-2 was trained from.

use super::config::Gpt2Config;
use super::grn::{Head, BETA, GAMMA};
use crate::util::rng::Rng;

/// One parameter tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// HF name without the `transformer.` prefix, e.g. `h.0.attn.c_attn.weight`.
    pub name: String,
    /// Shape as stored in a HF checkpoint.
    pub shape: Vec<usize>,
    /// Whether AdamW's weight decay applies (matrices and embeddings, not biases or norms).
    pub decay: bool,
}

impl ParamSpec {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The name in `model.safetensors`: the transformer's tensors under `transformer.` (as
    /// `GPT2LMHeadModel` saves them), a head's GRN (`grn.gamma`, `grn.beta`) at the top level
    /// beside `lm_head`, since it sits in front of the head, not inside the transformer.
    pub fn file_name(&self) -> String {
        if self.name.starts_with(&format!("{}.", Head::Policy.param_prefix())) {
            self.name.clone()
        } else {
            format!("transformer.{}", self.name)
        }
    }
}

/// The tensors of one transformer block, in storage order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum BlockParam {
    /// ln_1.weight (C)
    Ln1W,
    /// ln_1.bias (C)
    Ln1B,
    /// attn.c_attn.weight (C, 3C)
    QkvW,
    /// attn.c_attn.bias (3C)
    QkvB,
    /// attn.c_proj.weight (C, C)
    AttnProjW,
    /// attn.c_proj.bias (C)
    AttnProjB,
    /// ln_2.weight (C)
    Ln2W,
    /// ln_2.bias (C)
    Ln2B,
    /// mlp.c_fc.weight (C, 4C)
    FcW,
    /// mlp.c_fc.bias (4C)
    FcB,
    /// mlp.c_proj.weight (4C, C)
    FcProjW,
    /// mlp.c_proj.bias (C)
    FcProjB,
}

/// Tensors per block.
pub const PER_BLOCK: usize = 12;

/// Index of `wte.weight` (V, C) in the parameter list.
pub const WTE: usize = 0;
/// Index of `wpe.weight` (n_positions, C).
pub const WPE: usize = 1;

/// Index of a block tensor.
pub fn block(l: usize, p: BlockParam) -> usize {
    2 + l * PER_BLOCK + p as usize
}

/// Index of `ln_f.weight`; `ln_f.bias` follows it.
pub fn ln_f(n_layer: usize) -> usize {
    2 + n_layer * PER_BLOCK
}

/// Index of the policy head's GRN γ (C) when the config applies one; β (C) follows it.
pub fn policy_grn(cfg: &Gpt2Config) -> Option<usize> {
    cfg.grn.applies_to(Head::Policy).then(|| ln_f(cfg.n_layer) + 2)
}

/// Whether parameter `i` is a matrix the GEMMs multiply by: wte (as the tied lm_head) and each
/// block's c_attn, attn.c_proj, c_fc and mlp.c_proj weights. In bf16 mixed precision these get
/// a bf16 compute copy beside the f32 master.
pub fn is_gemm_weight(cfg: &Gpt2Config, i: usize) -> bool {
    if i == WTE {
        return true;
    }
    let first = block(0, BlockParam::Ln1W);
    if i < first || i >= ln_f(cfg.n_layer) {
        return false;
    }
    let q = (i - first) % PER_BLOCK;
    [BlockParam::QkvW, BlockParam::AttnProjW, BlockParam::FcW, BlockParam::FcProjW].iter().any(|&p| p as usize == q)
}

/// Every parameter of the model, in the order the model stores them: the transformer, then
/// the policy head's GRN γ and β when the config applies one (zero at init, not decayed).
pub fn param_specs(cfg: &Gpt2Config) -> Vec<ParamSpec> {
    let c = cfg.n_embd;
    let p = |name: String, shape: Vec<usize>, decay: bool| ParamSpec { name, shape, decay };
    let mut v = vec![
        p("wte.weight".into(), vec![cfg.vocab_size, c], true),
        p("wpe.weight".into(), vec![cfg.n_positions, c], true),
    ];
    for l in 0..cfg.n_layer {
        let h = |s: &str| format!("h.{l}.{s}");
        v.extend([
            p(h("ln_1.weight"), vec![c], false),
            p(h("ln_1.bias"), vec![c], false),
            p(h("attn.c_attn.weight"), vec![c, 3 * c], true),
            p(h("attn.c_attn.bias"), vec![3 * c], false),
            p(h("attn.c_proj.weight"), vec![c, c], true),
            p(h("attn.c_proj.bias"), vec![c], false),
            p(h("ln_2.weight"), vec![c], false),
            p(h("ln_2.bias"), vec![c], false),
            p(h("mlp.c_fc.weight"), vec![c, 4 * c], true),
            p(h("mlp.c_fc.bias"), vec![4 * c], false),
            p(h("mlp.c_proj.weight"), vec![4 * c, c], true),
            p(h("mlp.c_proj.bias"), vec![c], false),
        ]);
    }
    v.push(p("ln_f.weight".into(), vec![c], false));
    v.push(p("ln_f.bias".into(), vec![c], false));
    if policy_grn(cfg).is_some() {
        let prefix = Head::Policy.param_prefix();
        v.push(p(format!("{prefix}.{GAMMA}"), vec![c], false));
        v.push(p(format!("{prefix}.{BETA}"), vec![c], false));
    }
    v
}

/// GPT-2's initialisation: N(0, 0.02) matrices, the two residual projections scaled by
/// 1/√(2L) so the residual stream's variance does not grow with depth, unit norms, zero biases.
pub fn init_params(cfg: &Gpt2Config, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let resid_std = 0.02 / (2.0 * cfg.n_layer as f32).sqrt();
    param_specs(cfg)
        .iter()
        .map(|s| {
            let n = s.numel();
            if s.name.ends_with("c_proj.weight") {
                (0..n).map(|_| rng.normal() * resid_std).collect()
            } else if s.decay {
                (0..n).map(|_| rng.normal() * 0.02).collect()
            } else if s.name.contains("ln_") && s.name.ends_with(".weight") {
                vec![1.0; n]
            } else {
                vec![0.0; n]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_has_124m_parameters_and_indices_line_up() {
        let cfg = Gpt2Config::named("gpt2", 50257).unwrap();
        let specs = param_specs(&cfg);
        let n: usize = specs.iter().map(|s| s.numel()).sum();
        assert_eq!(n, 124_439_808);
        assert_eq!(specs[block(3, BlockParam::FcProjB)].name, "h.3.mlp.c_proj.bias");
        assert_eq!(specs[block(0, BlockParam::QkvW)].shape, vec![768, 2304]);
        assert_eq!(specs[ln_f(12)].name, "ln_f.weight");
        assert_eq!(specs[WPE].name, "wpe.weight");
    }
}
