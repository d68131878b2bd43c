//! The GPT-2 golden checks shared by `tests/golden_gpt2.rs` (f32 and TF32 against the float64
//! references of `tools/golden/gen_golden.py`) and `tests/golden_bf16.rs` (bf16 mixed precision
//! against PyTorch autocast, `tools/golden/gen_golden_bf16.py`): logits, loss, every parameter
//! gradient by name, and six AdamW steps, read from `<config>/<file>` next to the model.

use super::rel_err;
use gepa_dapo_grn::backend::Backend;
use gepa_dapo_grn::checkpoint::{load_model, TensorFile};
use gepa_dapo_grn::model::Gpt2;
use gepa_dapo_grn::optim::{AdamW, AdamWConfig, LrSchedule};
use std::path::PathBuf;

/// The folder of golden config `cfg` ("a" or "b").
pub fn dir(cfg: &str) -> PathBuf {
    super::test_data().join("golden").join(cfg)
}

/// One golden file with its inputs (always those of `golden.safetensors`).
pub struct Golden {
    pub file: TensorFile,
    pub meta: serde_json::Value,
    pub b: usize,
    pub t: usize,
    pub ids: Vec<u32>,
    pub targets: Vec<u32>,
    pub weights: Vec<f32>,
}

/// The references of `file` (e.g. `golden.safetensors`) for config `cfg`, with the inputs
/// and the AdamW settings of `golden.safetensors` / `golden.json`.
pub fn golden(cfg: &str, file: &str) -> Golden {
    let inputs = TensorFile::open(&dir(cfg).join("golden.safetensors")).unwrap();
    let file = TensorFile::open(&dir(cfg).join(file)).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir(cfg).join("golden.json")).unwrap()).unwrap();
    let (ids, shape) = inputs.i64("input_ids").unwrap();
    let (b, t) = (shape[0], shape[1]);
    let (tg, _) = inputs.i64("targets").unwrap();
    // -100 is PyTorch's ignore index: weight 0, placeholder target.
    let mask: Vec<bool> = tg.iter().map(|&x| x >= 0).collect();
    assert!(mask.iter().any(|m| !m), "the golden batch masks some positions");
    Golden {
        b,
        t,
        ids: ids.iter().map(|&x| x as u32).collect(),
        targets: tg.iter().map(|&x| x.max(0) as u32).collect(),
        weights: gepa_dapo_grn::model::mean_weights(&mask),
        file,
        meta,
    }
}

/// The model of config `cfg` from its subfolder `sub` on `k`.
pub fn model<K: Backend>(cfg: &str, sub: &str, k: K) -> Gpt2<K> {
    load_model(&dir(cfg).join(sub), k).unwrap()
}

/// The tolerances of one precision (each test file states and justifies its own).
pub struct Tol {
    pub logits: f32,
    pub loss: f32,
    pub grads: f32,
    pub adam_loss: f32,
    pub adam_norm: f32,
    /// Final weights after the AdamW steps (None: not compared).
    pub adam_params: Option<f32>,
}

/// Logits, loss and every gradient of one forward/backward pass against the references.
pub fn logits_loss_and_grads<K: Backend>(cfg: &str, file: &str, k: K, tol: &Tol) {
    let g = golden(cfg, file);
    let mut m = model(cfg, "model", k);
    let loss = m.forward_backward(&g.ids, &g.targets, &g.weights, g.b, g.t).unwrap();
    let want_loss = g.file.f32("loss", None).unwrap().0[0];
    println!("[{cfg}] loss rust {loss:.7} torch {want_loss:.7}");
    assert!(((loss - want_loss) / want_loss).abs() < tol.loss, "loss {loss} vs {want_loss}");

    let (want_logits, shape) = g.file.f32("logits", None).unwrap();
    assert_eq!(shape, vec![g.b, g.t, m.config().vocab_size]);
    // forward_backward overwrote the logits with their gradient; recompute them.
    m.forward(&g.ids, g.b, g.t).unwrap();
    let logits = m.logits().unwrap();
    let e = rel_err(&logits, &want_logits, 1.0);
    println!("[{cfg}] logits[0..3] rust {:?} torch {:?}; rel err {e:.2e}", &logits[..3], &want_logits[..3]);
    assert!(e < tol.logits, "logits rel err {e}");

    let mut worst = (0.0f32, String::new());
    for spec in m.specs().to_vec() {
        let (want, shape) = g.file.f32(&format!("grad.{}", spec.name), None).unwrap();
        assert_eq!(shape, spec.shape, "{}", spec.name);
        let got = m.grad(&spec.name).unwrap();
        let e = rel_err(&got, &want, 1e-6);
        assert!(e < tol.grads, "gradient of {}: rel err {e}", spec.name);
        if e > worst.0 {
            worst = (e, spec.name.clone());
        }
    }
    println!("[{cfg}] {} gradients match; worst {} at {:.2e}", m.specs().len(), worst.1, worst.0);
}

/// Six AdamW steps (warmup + cosine, clipping) against the references' losses, gradient
/// norms and (when `tol.adam_params` says so) final weights.
pub fn adamw_steps<K: Backend>(cfg: &str, file: &str, k: K, tol: &Tol) {
    let g = golden(cfg, file);
    let a = &g.meta["adamw"];
    let f = |k: &str| a[k].as_f64().unwrap() as f32;
    let steps = a["steps"].as_u64().unwrap();
    assert!(steps >= 5);
    let sched = LrSchedule::cosine(f("max_lr"), f("min_lr"), a["warmup"].as_u64().unwrap(), steps);
    let opt_cfg = AdamWConfig {
        beta1: a["betas"][0].as_f64().unwrap() as f32,
        beta2: a["betas"][1].as_f64().unwrap() as f32,
        eps: f("eps"),
        weight_decay: f("weight_decay"),
    };
    let max_norm = f("max_grad_norm");
    let mut m = model(cfg, "model", k);
    let mut opt = AdamW::new(&m, opt_cfg);
    let want_losses = g.file.f32("adamw_losses", None).unwrap().0;
    let want_norms = g.file.f32("adamw_grad_norms", None).unwrap().0;
    let want_lrs = g.file.f32("adamw_lrs", None).unwrap().0;
    let mut clipped = 0;
    // Coordinates whose gradient sat at rounding-noise level in some step (non-zero but < 1e-5 of the
    // tensor's largest): Adam turns noise into a full ±lr step of arbitrary sign there, in
    // f64 as in f32, so those are not comparable. The key bias is the standing example: its
    // gradient is exactly zero, since adding q·b_k to a whole score row leaves the softmax as is.
    let mut noisy: Vec<Vec<bool>> = m.specs().iter().map(|s| vec![false; s.numel()]).collect();
    for s in 0..steps as usize {
        m.zero_grad();
        let loss = m.forward_backward(&g.ids, &g.targets, &g.weights, g.b, g.t).unwrap();
        for (i, spec) in m.specs().iter().enumerate() {
            let gr = m.grad(&spec.name).unwrap();
            let max = gr.iter().fold(0.0f32, |a, x| a.max(x.abs()));
            noisy[i].iter_mut().zip(&gr).for_each(|(n, x)| *n |= *x != 0.0 && x.abs() < 1e-5 * max);
        }
        let lr = sched.lr(s as u64);
        assert!((lr - want_lrs[s]).abs() <= 1e-7 * want_lrs[s].abs().max(1.0), "lr at step {s}");
        let info = opt.step(&mut m, lr, Some(max_norm)).unwrap();
        println!(
            "[{cfg}] step {s}: loss {loss:.6} (torch {:.6}) norm {:.5} (torch {:.5})",
            want_losses[s], info.grad_norm, want_norms[s]
        );
        assert!(
            ((loss - want_losses[s]) / want_losses[s]).abs() < tol.adam_loss,
            "loss at step {s}: {loss} vs {}",
            want_losses[s]
        );
        assert!(((info.grad_norm - want_norms[s]) / want_norms[s]).abs() < tol.adam_norm, "grad norm at step {s}");
        clipped += (info.clip_scale < 1.0) as usize;
    }
    assert!(clipped > 0, "the golden run is built so that clipping triggers");
    assert!(want_losses[steps as usize - 1] < want_losses[0], "the reference run learns");
    let Some(param_tol) = tol.adam_params else {
        println!("[{cfg}] losses and gradient norms match; final weights not compared at this precision");
        return;
    };
    let (mut skipped, mut total, mut worst) = (0, 0, 0.0f32);
    for (i, spec) in m.specs().iter().enumerate() {
        let (want, _) = g.file.f32(&format!("adamw_final.{}", spec.name), None).unwrap();
        let got = m.param(&spec.name).unwrap();
        let keep = |v: &[f32]| -> Vec<f32> { v.iter().zip(&noisy[i]).filter(|(_, &n)| !n).map(|(x, _)| *x).collect() };
        let e = rel_err(&keep(&got), &keep(&want), 1e-3);
        assert!(e < param_tol, "final {}: rel err {e}", spec.name);
        worst = worst.max(e);
        skipped += noisy[i].iter().filter(|&&n| n).count();
        total += spec.numel();
    }
    // Only a sliver may be excluded: the key biases plus a handful of coordinates.
    let key_bias = m.config().n_layer * m.config().n_embd;
    println!(
        "[{cfg}] final parameters match (worst {worst:.2e} of max |param|); {skipped} of {total} noise-level coordinates excluded ({key_bias} key-bias)"
    );
    assert!(skipped < key_bias + total / 200, "too many excluded coordinates: {skipped}");
}
