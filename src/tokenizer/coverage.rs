//! Finding characters an encoding dropped.
//!
//! A BPE model with no unknown token (the built-in character-level tokenizer, and any
//! `tokenizer.json` built the same way) skips a character it has no id for, without an error.
//! Detection uses the offsets: every token points back at the text it came from, so some
//! character that no token covers means something was dropped. Offsets alone cannot say
//! *which* character, though: inside a pre-tokenized word they are running sums of the kept
//! characters' lengths, so everything after a dropped character shifts left and the gap shows
//! up at the end of the word. Where tokens are verbatim pieces of the text, matching them
//! against it finds the culprit exactly.

/// The byte offset of the first character of `text` that no token's `(start, end)` byte range
/// covers, or `None` when every character is covered.
///
/// When `strict` is false, uncovered whitespace and control characters are allowed: a
/// normalizer, pre-tokenizer or post-processor may drop or trim them on purpose (BERT's
/// normalizer removes control characters; byte-level offset trimming leaves spaces out).
pub(crate) fn first_uncovered(text: &str, offsets: &[(usize, usize)], strict: bool) -> Option<usize> {
    let mut covered = vec![false; text.len()];
    for &(start, end) in offsets {
        // Offsets past the end would be a bug in the tokenizer; clamp rather than panic.
        let end = end.min(text.len());
        if start < end {
            covered[start..end].iter_mut().for_each(|c| *c = true);
        }
    }
    // A multi-byte character counts as covered when its first byte is: offsets always fall
    // on character boundaries.
    text.char_indices()
        .find(|&(i, c)| !covered[i] && (strict || !(c.is_whitespace() || c.is_control())))
        .map(|(i, _)| i)
}

/// The byte offset of the first character of `text` that the concatenation of `pieces`
/// (the tokens' strings, in order) skips, or `None` when the pieces spell `text` exactly.
///
/// Valid only for tokenizers whose tokens are verbatim substrings of the input (no
/// normalizer or pre-tokenizer rewriting it).
pub(crate) fn first_unmatched<S: AsRef<str>>(text: &str, pieces: impl IntoIterator<Item = S>) -> Option<usize> {
    let mut cursor = 0;
    for piece in pieces {
        let piece = piece.as_ref();
        // A piece that does not continue the text means the character at the cursor was
        // dropped (the piece matches the text somewhere after it).
        if !text[cursor..].starts_with(piece) {
            return Some(cursor);
        }
        cursor += piece.len();
    }
    (cursor < text.len()).then_some(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_gap_and_respects_strictness() {
        // "aéb c": a(0..1) é(1..3) b(3..4) ' '(4..5) c(5..6); é and ' ' uncovered.
        let text = "aéb c";
        let offsets = [(0, 1), (3, 4), (5, 6)];
        assert_eq!(first_uncovered(text, &offsets, true), Some(1));
        let offsets = [(0, 1), (1, 3), (3, 4), (5, 6)];
        assert_eq!(first_uncovered(text, &offsets, true), Some(4));
        assert_eq!(first_uncovered(text, &offsets, false), None);
        assert_eq!(first_uncovered(text, &[(0, 6)], true), None);
        assert_eq!(first_uncovered("", &[], true), None);
    }

    #[test]
    fn matching_pieces_finds_the_dropped_character() {
        assert_eq!(first_unmatched("aa b", ["a", "a", "b"]), Some(2));
        assert_eq!(first_unmatched("aab!", ["a", "ab"]), Some(3));
        assert_eq!(first_unmatched("xé<|endoftext|>", ["x", "<|endoftext|>"]), Some(1));
        assert_eq!(first_unmatched("ab<|endoftext|>", ["ab", "<|endoftext|>"]), None);
        assert_eq!(first_unmatched("", Vec::<String>::new()), None);
    }
}
