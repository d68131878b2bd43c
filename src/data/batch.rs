//! A fixed-shape batch for next-token training.

/// `b` rows of `t` (input, target, weight) triples, each array row-major `(b, t)`.
///
/// `targets[i]` is the token that follows `inputs[i]`. `weights[i]` is 0 where the target is
/// not trained on (prompt tokens, padding) and otherwise `1 / num_targets()`, so a weighted sum
/// of per-token losses is the mean over trained tokens. When no target is trained on, every
/// weight is 0; check [`Batch::num_targets`] before stepping.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Rows.
    pub b: usize,
    /// Positions per row.
    pub t: usize,
    /// Input token ids, `b * t`.
    pub inputs: Vec<u32>,
    /// Target token ids (the next token), `b * t`.
    pub targets: Vec<u32>,
    /// Loss weights, `b * t`, summing to 1 (or all 0).
    pub weights: Vec<f32>,
}

impl Batch {
    /// A batch of padding only: every input and target `pad`, every weight 0.
    pub(crate) fn padding(b: usize, t: usize, pad: u32) -> Self {
        Batch { b, t, inputs: vec![pad; b * t], targets: vec![pad; b * t], weights: vec![0.0; b * t] }
    }

    /// Writes `tokens` (at most `t + 1` of them are used) into row `row`: position `i` gets
    /// input `tokens[i]`, target `tokens[i + 1]` and weight 1 if `mask[i + 1]`. Positions past
    /// the end keep their padding.
    pub(crate) fn fill_row(&mut self, row: usize, tokens: &[u32], mask: &[bool]) {
        let base = row * self.t;
        let pairs = tokens.len().saturating_sub(1).min(self.t);
        for i in 0..pairs {
            self.inputs[base + i] = tokens[i];
            self.targets[base + i] = tokens[i + 1];
            // A mask shorter than the tokens (an inconsistent hand-built example) trains nothing
            // there rather than panicking.
            self.weights[base + i] = if mask.get(i + 1).copied().unwrap_or(false) { 1.0 } else { 0.0 };
        }
    }

    /// Turns the 0/1 weights into a mean over trained targets.
    pub(crate) fn normalise(&mut self) {
        let n = self.num_targets();
        if n > 0 {
            let w = 1.0 / n as f32;
            self.weights.iter_mut().filter(|x| **x > 0.0).for_each(|x| *x = w);
        }
    }

    /// How many positions are trained on (have a non-zero weight).
    pub fn num_targets(&self) -> usize {
        self.weights.iter().filter(|&&w| w > 0.0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_normalise() {
        let mut batch = Batch::padding(2, 3, 9);
        batch.fill_row(0, &[1, 2, 3, 4, 5], &[true, false, true, true, true]);
        batch.fill_row(1, &[7, 8], &[true, true]);
        assert_eq!(batch.inputs, vec![1, 2, 3, 7, 9, 9]);
        assert_eq!(batch.targets, vec![2, 3, 4, 8, 9, 9]);
        assert_eq!(batch.weights, vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        batch.normalise();
        assert_eq!(batch.num_targets(), 3);
        assert_eq!(batch.weights, vec![0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0, 0.0]);

        let mut empty = Batch::padding(1, 2, 0);
        empty.fill_row(0, &[4, 5, 6], &[true, false, false]);
        empty.normalise();
        assert_eq!(empty.num_targets(), 0);
        assert_eq!(empty.weights, vec![0.0, 0.0]);
    }
}
