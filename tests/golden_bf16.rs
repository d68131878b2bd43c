//! bf16 mixed precision against PyTorch autocast: GPT-2 configs a and b (logits, loss, every
//! gradient, six AdamW steps) on the emulated kernel backend in bf16 (`--device emu --dtype
//! bf16`: bf16 activations and weight copies, bf16 GEMM operands with f32 accumulation, the
//! bf16 kernels) and on a GPU at `--dtype bf16` when one is present, against
//! `golden_bf16.safetensors` from `tools/golden/gen_golden_bf16.py` (`torch.autocast("cpu",
//! bfloat16)`, f32 master weights, torch AdamW).
//!
//! Tolerances. Both sides round to bf16, but in different places: autocast rounds every linear
//! output and the attention scores and probabilities to bf16 (eager attention), keeps layer
//! norms in f32 and rounds the logits; we keep attention scores, probabilities and the logits
//! in f32 and round the linear outputs, GELU and layer-norm outputs. So the two differ by the
//! same order as each differs from exact arithmetic, which the generator measured against the
//! float64 references (`golden_bf16.json`, `distance_to_f64`): logits 6.5e-3 / 8.1e-3 of
//! max |logit| (a / b), loss 2.5e-4 / 2.7e-5, gradients at worst 1.2e-2 / 1.3e-2 of the
//! tensor's max (median 6e-3), AdamW losses 2.6e-3 / 2.1e-3, gradient norms 2.7e-2 / 3.4e-2.
//! Measured here (emulator vs autocast), a / b: logits 5.6e-3 / 6.8e-3, loss 1.0e-4 / 1.0e-4,
//! gradients at worst 9.5e-3 / 1.0e-2, AdamW losses 5.6e-3 / 1.6e-3 (config a's step 2 sits
//! at the clip limit: 1.628 here, 1.620 there, limit 1.622, so one side clips and the other
//! not, and step 3 differs most), gradient norms 4.5e-2 / 2.3e-2. The bounds are 2-5× those. A wrong formula (a missing rounding is not one: it is the noise) moves
//! logits and gradients by O(1) of their scale, as the f32 goldens show. The final weights
//! are not compared: Adam turns bf16-level noise on tiny gradients into full steps of either
//! sign (the generator measured 5-7e-2 even between autocast and f64).

#[macro_use]
mod common;

use common::golden::{adamw_steps, logits_loss_and_grads, model, Tol};
use gepa_dapo_grn::backend::kernel::EmuBackend;
use gepa_dapo_grn::backend::{Backend, Precision};

const FILE: &str = "golden_bf16.safetensors";

/// bf16 mixed precision against autocast (see the module comment).
const BF16: Tol =
    Tol { logits: 1.5e-2, loss: 5e-4, grads: 2.5e-2, adam_loss: 1.2e-2, adam_norm: 9e-2, adam_params: None };

fn all<K: Backend + Clone>(k: K) {
    for cfg in ["a", "b"] {
        logits_loss_and_grads(cfg, FILE, k.clone(), &BF16);
        adamw_steps(cfg, FILE, k.clone(), &BF16);
    }
}

#[test]
fn emulated_bf16_matches_autocast() {
    all(EmuBackend::emulated_bf16());
}

/// The bf16 run really rounds: its logits differ from the f32 emulator's by bf16's order, not
/// f32's (the autocast bounds alone would also pass an f32 run), and the compute copies and
/// activations are stored as bf16.
#[test]
fn the_bf16_run_is_not_an_f32_run() {
    let g = common::golden::golden("b", FILE);
    let logits = |k: EmuBackend| {
        let mut m = model("b", "model", k);
        m.forward(&g.ids, g.b, g.t).unwrap();
        m.logits().unwrap()
    };
    let (l16, l32) = (logits(EmuBackend::emulated_bf16()), logits(EmuBackend::emulated()));
    let e = common::rel_err(&l16, &l32, 1.0);
    println!("bf16 vs f32 logits: {e:.2e} of max |logit|");
    assert!(e > 1e-3, "bf16 logits within {e:.1e} of f32's: the bf16 path is not taken");
}

#[test]
fn cuda_bf16_matches_autocast() {
    if let Some(k) = common::gpu_at(Precision::BF16) {
        all(k);
    }
}
