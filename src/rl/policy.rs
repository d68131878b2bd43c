//! The model-agnostic interface (after the `grpo-model-agnostic` seed): any policy that can
//! sample actions with their log-probabilities and differentiate them, and any reward model,
//! plug into [`GroupTrainer`](super::group_trainer::GroupTrainer).

use crate::error::Result;
use crate::util::rng::Rng;
use std::collections::BTreeMap;

/// A stochastic policy over actions given states.
///
/// The trainer never sees parameters: it asks for log-probabilities and entropies, and hands
/// back the loss's derivatives with respect to them, which the policy chains into its own
/// parameters (a GPT-2, a table, a robot controller...).
pub trait Policy {
    /// What the policy conditions on (a prompt, an observation).
    type State;
    /// What it produces (a completion, an arm, a move).
    type Action: Clone;

    /// Samples `g` actions for `state` with their log-probabilities under the current policy.
    fn sample(&mut self, state: &Self::State, g: usize, rng: &mut Rng) -> Result<Vec<(Self::Action, f64)>>;

    /// `(log π(a|s), H(π(·|s)))` for each (state, action) pair, under the current parameters.
    fn evaluate(&mut self, pairs: &[(&Self::State, &Self::Action)]) -> Result<Vec<(f64, f64)>>;

    /// Accumulates the gradient of `Σ_i dlogp[i]·log π(a_i|s_i) + dentropy[i]·H(π(·|s_i))`
    /// into the policy's parameter gradients.
    fn backward(&mut self, pairs: &[(&Self::State, &Self::Action)], dlogp: &[f64], dentropy: &[f64]) -> Result<()>;

    /// Applies the accumulated gradient with learning rate `lr` and clears it.
    fn step(&mut self, lr: f64) -> Result<()>;
}

/// Scores (state, action) pairs with a reward vector each (GEPA-style: named components such
/// as `correctness` or `brevity`), which the trainer mixes into scalars.
pub trait RewardModel<S, A> {
    /// One map of named rewards per pair.
    fn feedback(&mut self, pairs: &[(&S, &A)]) -> Result<Vec<BTreeMap<String, f64>>>;
}
