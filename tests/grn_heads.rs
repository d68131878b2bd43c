//! GRN (causal, the policy head's form) wrapping the input of the policy head: hidden → GRN →
//! DAPO objective (the chunked lm_head loss). At zero init the loss and the hidden gradient are bit-identical to the run
//! without GRN; with learned γ, β the chained gradient (objective backward, then GRN
//! backward) matches finite differences of the whole pipeline.

use gepa_dapo_grn::backend::cpu::CpuBackend;
use gepa_dapo_grn::backend::prelude::*;
use gepa_dapo_grn::model::grn::{maybe_apply_grn, Grn, GrnConfig, Head};
use gepa_dapo_grn::rl::objective::{DapoObjective, ObjectiveBatch, ObjectiveConfig};
use gepa_dapo_grn::util::rng::Rng;

const S: usize = 3;
const L: usize = 5;
const C: usize = 8;
const V: usize = 11;

struct Case {
    hidden: Vec<f32>,
    weight: Vec<f32>,
    targets: Vec<u32>,
    mask: Vec<f32>,
    adv: Vec<f32>,
    logp_old: Vec<f32>,
}

fn case() -> Case {
    let mut rng = Rng::new(21);
    let n = S * L;
    let mut mask = vec![1.0f32; n];
    mask[L + 3..2 * L].iter_mut().for_each(|m| *m = 0.0); // second sequence is shorter
    Case {
        hidden: (0..n * C).map(|_| rng.normal()).collect(),
        weight: (0..V * C).map(|_| rng.normal() * 0.5).collect(),
        targets: (0..n).map(|_| rng.below(V) as u32).collect(),
        mask,
        adv: vec![1.0, -0.5, 0.7],
        logp_old: (0..n).map(|_| -2.4 + 0.05 * rng.normal()).collect(),
    }
}

/// Loss and d loss / d (GRN input) for the pipeline, with `grn` in front of the head.
fn pipeline(k: &CpuBackend, c: &Case, hidden_in: &[f32], grn: Option<&mut Grn>) -> (f32, Vec<f32>) {
    let n = S * L;
    let mut hidden = hidden_in.to_vec();
    let mut grn = grn;
    if let Some(g) = grn.as_deref_mut() {
        g.forward(&mut hidden, hidden_in, &c.mask, S, L, C);
    }
    let (h, w, t, m, a, lo) = (
        k.upload(&hidden),
        k.upload(&c.weight),
        k.upload_ids(&c.targets),
        k.upload(&c.mask),
        k.upload(&c.adv),
        k.upload(&c.logp_old),
    );
    let batch = ObjectiveBatch {
        hidden: &h,
        weight: &w,
        targets: &t,
        mask: &m,
        advantages: &a,
        logp_old: &lo,
        logp_ref: None,
        s: S,
        l: L,
        c: C,
        v: V,
        norm: None,
    };
    // Clip ranges wide enough that no ratio is clipped: the clip's kinks would make central
    // differences meaningless, and the objective's own tests cover clipping.
    let cfg = ObjectiveConfig { chunk_rows: 4, eps_low: 0.99, eps_high: 100.0, ..ObjectiveConfig::default() };
    let mut obj = DapoObjective::new(cfg).unwrap();
    let (mut gh, mut gw) = (k.alloc(n * C), k.alloc(V * C));
    let metrics = obj.forward_backward(k, &batch, &mut gh, &mut gw).unwrap();
    let gh = k.download(&gh);
    match grn {
        Some(g) => {
            let mut dx = vec![0.0; n * C];
            g.backward(&mut dx, &gh, hidden_in, &c.mask, S, L, C);
            (metrics.loss, dx)
        }
        None => (metrics.loss, gh),
    }
}

#[test]
fn zero_init_grn_changes_nothing_in_the_policy_loss() {
    let k = CpuBackend::new(Some(1));
    let c = case();
    let cfg = GrnConfig { enabled: true, ..GrnConfig::default() };
    let mut grn = maybe_apply_grn(&cfg, Head::Policy, C).expect("enabled for the policy head");
    let (loss0, g0) = pipeline(&k, &c, &c.hidden, None);
    let (loss1, g1) = pipeline(&k, &c, &c.hidden, Some(&mut grn));
    assert_eq!(loss0.to_bits(), loss1.to_bits());
    assert!(g0.iter().zip(&g1).all(|(a, b)| a.to_bits() == b.to_bits()), "hidden gradient changed");
    // ...but γ and β already receive gradient, so GRN can start learning.
    assert!(grn.dgamma.iter().chain(&grn.dbeta).any(|&g| g != 0.0));
    assert!(maybe_apply_grn(&GrnConfig::default(), Head::Policy, C).is_none(), "off by default");
}

#[test]
fn learned_grn_gradient_through_the_objective_matches_finite_differences() {
    let k = CpuBackend::new(Some(1));
    let c = case();
    let mut rng = Rng::new(5);
    let gamma: Vec<f32> = (0..C).map(|_| 0.3 * rng.normal()).collect();
    let beta: Vec<f32> = (0..C).map(|_| 0.3 * rng.normal()).collect();
    let mut grn = Grn::from_params(Head::Policy, gamma.clone(), beta.clone(), 1e-6).unwrap();
    let (_, dx) = pipeline(&k, &c, &c.hidden, Some(&mut grn));
    let (dgamma, dbeta) = (grn.dgamma.clone(), grn.dbeta.clone());
    let loss_at = |x: &[f32], g: &[f32], b: &[f32]| {
        let mut grn = Grn::from_params(Head::Policy, g.to_vec(), b.to_vec(), 1e-6).unwrap();
        pipeline(&k, &c, x, Some(&mut grn)).0 as f64
    };
    let h = 1e-2f32;
    let check = |what: &str, analytic: f32, plus: f64, minus: f64| {
        let numeric = (plus - minus) / (2.0 * h as f64);
        assert!(
            (analytic as f64 - numeric).abs() <= 2e-3 + 3e-2 * numeric.abs(),
            "{what}: analytic {analytic} vs numeric {numeric}"
        );
    };
    for i in [0usize, 9, 17, 30, 44, 61, 77, 100, 117] {
        // Padded positions (sequence 1, t ≥ 3) included: they reach no earlier position, so
        // their gradient is 0, as the loss does not see them.
        let (mut xp, mut xm) = (c.hidden.clone(), c.hidden.clone());
        xp[i] += h;
        xm[i] -= h;
        check(&format!("dx[{i}]"), dx[i], loss_at(&xp, &gamma, &beta), loss_at(&xm, &gamma, &beta));
    }
    for j in 0..C {
        let (mut gp, mut gm) = (gamma.clone(), gamma.clone());
        gp[j] += h;
        gm[j] -= h;
        check(&format!("dgamma[{j}]"), dgamma[j], loss_at(&c.hidden, &gp, &beta), loss_at(&c.hidden, &gm, &beta));
        let (mut bp, mut bm) = (beta.clone(), beta.clone());
        bp[j] += h;
        bm[j] -= h;
        check(&format!("dbeta[{j}]"), dbeta[j], loss_at(&c.hidden, &gamma, &bp), loss_at(&c.hidden, &gamma, &bm));
    }
}
