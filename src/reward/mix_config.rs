//! The reward mixer's configuration: its types, its three file formats, and its validation.
//!
//! # File format
//!
//! The format is chosen by extension: `.yaml`/`.yml`, `.json` or `.toml`. Two shapes are
//! accepted.
//!
//! **Bare weights** (the seed's file): a map of GEPA key → weight, everything else default —
//! a plain weighted sum with no normalisation or clipping, where a missing or non-finite value
//! is an error:
//!
//! ```yaml
//! correctness: 1.0
//! reasoning_quality: 0.5
//! format_penalty: -0.25
//! ```
//!
//! **Full form**: a map with a `keys` table. Each key is either a bare weight or a table of
//! per-key options; the top-level fields are defaults and the scalar stage:
//!
//! ```yaml
//! mode: normalize_then_sum    # or sum_then_normalize (default normalize_then_sum)
//! normalize: none             # none | group | batch | running (default none); see below
//! missing: error              # error | zero | skip: a key absent from an item (default error)
//! nan: error                  # error | zero | skip: a NaN or ±inf value (default error)
//! eps: 1.0e-6                 # added to the std when normalising (default 1e-6)
//! running_momentum: 0.99      # EMA momentum of the `running` statistics (default 0.99)
//! final_clip: [-5.0, 5.0]     # clip of the mixed scalar (default none)
//! keys:
//!   correctness: {weight: 1.0, normalize: group, clip: [-3.0, 3.0]}
//!   reasoning_quality: 0.5
//!   format_penalty: {weight: -0.25, missing: zero, optional: true}
//! ```
//!
//! Per-key fields: `weight` (required; negative weights are penalties), `normalize`, `clip`
//! (`[lo, hi]`, either bound may be infinite in YAML/TOML), `missing`, `nan` (overriding the
//! top-level defaults) and `optional` (default false; see below).
//!
//! # Semantics
//!
//! A key's value is read from the item's `rewards`, else from its `tags`. Per key and item:
//! raw value → `missing`/`nan` policy → normalisation (in `normalize_then_sum` only) → `clip` →
//! × `weight`. The weighted terms are summed; in `sum_then_normalize` the sum is then
//! normalised; finally `final_clip` applies. So `clip` always bounds a key's value just before
//! it is weighted, and the top-level `normalize` is the one knob that says how to normalise:
//! per key (as the default for keys that set none) in `normalize_then_sum`, on the weighted sum
//! in `sum_then_normalize`, where a per-key `normalize` is rejected as meaningless.
//!
//! Normalisations, with population statistics (divide by n) over the values present:
//! - `none`: the value as is.
//! - `group`: (x − mean_g) / (std_g + eps) within each prompt's group (a group of one gives 0).
//! - `batch`: (x − mean) / (std + eps) over the whole call.
//! - `running`: (x − m) / (√v + eps), where (m, v) are exponential moving statistics kept in
//!   the mixer, updated by every call *before* normalising it: the first call sets them to the
//!   batch's mean and variance; later calls set them to those of a mixture weighing the past by
//!   `running_momentum` and this batch by the rest:
//!   m' = μ·m + (1−μ)·m_b, v' = μ·v + (1−μ)·v_b + μ(1−μ)·(m_b − m)².
//!
//! Policies for a missing key (`missing`) or a NaN/±inf value (`nan`): `error` fails the call
//! naming the key and the item; `zero` uses 0 as the raw value (it takes part in the
//! normalisation statistics); `skip` leaves the key out of that item's sum and out of the
//! statistics (an item whose every key is skipped gets the sum of nothing, 0, before any
//! scalar normalisation). Each handled case is counted in [`MixStats`](super::MixStats).
//!
//! A key that *no* item of the mixer's first call carries is an error naming it (a weight
//! on a key no scorer produces is a typo or a scorer/mapping mismatch, and training on without
//! it would silently change the objective) — unless the key is marked `optional: true`, for
//! axes that only some tasks produce.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::util::settings_file;
pub use crate::util::settings_file::ConfigFormat;

/// How values are normalised (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Unchanged.
    #[default]
    None,
    /// Within each group: (x − mean_g) / (std_g + eps).
    Group,
    /// Over the whole batch: (x − mean) / (std + eps).
    Batch,
    /// With exponential moving statistics kept across calls.
    Running,
}

/// Where normalisation happens relative to the weighted sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MixMode {
    /// Normalise each key, clip, weight, sum.
    #[default]
    NormalizeThenSum,
    /// Clip and weight each raw key, sum, then normalise the sum.
    SumThenNormalize,
}

/// What to do with a missing key or a non-finite value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValuePolicy {
    /// Fail, naming the key and the item.
    #[default]
    Error,
    /// Use 0 as the raw value.
    Zero,
    /// Leave the key out of this item's sum and out of the statistics.
    Skip,
}

/// One key's options.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyConfig {
    /// Multiplier of the key's (normalised, clipped) value; negative for penalties.
    pub weight: f64,
    /// Normalisation of this key (`normalize_then_sum` only); `None`: the top-level default.
    pub normalize: Option<Normalize>,
    /// `[lo, hi]` bounds applied just before weighting.
    pub clip: Option<(f64, f64)>,
    /// Missing-key policy; `None`: the top-level default.
    pub missing: Option<ValuePolicy>,
    /// Non-finite-value policy; `None`: the top-level default.
    pub nan: Option<ValuePolicy>,
    /// Exempt from the first-call check that some item carries the key.
    pub optional: bool,
}

impl KeyConfig {
    /// A key with weight `weight` and every option at its default.
    pub fn weight(weight: f64) -> Self {
        KeyConfig { weight, normalize: None, clip: None, missing: None, nan: None, optional: false }
    }
}

/// The whole mixer configuration (see the module documentation for the file format).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MixerConfig {
    /// Options per GEPA key.
    pub keys: BTreeMap<String, KeyConfig>,
    /// Normalise-then-sum or sum-then-normalise.
    pub mode: MixMode,
    /// Default per-key normalisation, or the scalar's normalisation in `sum_then_normalize`.
    pub normalize: Normalize,
    /// Default missing-key policy.
    pub missing: ValuePolicy,
    /// Default non-finite-value policy.
    pub nan: ValuePolicy,
    /// Added to the standard deviation when normalising.
    pub eps: f64,
    /// Momentum μ of the running statistics, in [0, 1).
    pub running_momentum: f64,
    /// `[lo, hi]` bounds of the mixed scalar.
    pub final_clip: Option<(f64, f64)>,
}

impl MixerConfig {
    /// A plain weighted sum of `weights`, every option at its default.
    pub fn from_weights<I, S>(weights: I) -> Self
    where
        I: IntoIterator<Item = (S, f64)>,
        S: Into<String>,
    {
        MixerConfig {
            keys: weights.into_iter().map(|(k, w)| (k.into(), KeyConfig::weight(w))).collect(),
            ..MixerConfig::default()
        }
    }

    /// Reads and validates a mixer file, choosing the format by extension
    /// ([`crate::util::settings_file`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        MixerConfig::from_document(settings_file::read(path)?, path)
    }

    /// Parses and validates `text` in `format`; `source` names it in errors.
    pub fn parse(text: &str, format: ConfigFormat, source: impl AsRef<Path>) -> Result<Self> {
        let source = source.as_ref();
        MixerConfig::from_document(settings_file::parse(text, format, source)?, source)
    }

    /// A parsed document's config, validated; errors name `source`.
    fn from_document(raw: Raw, source: &Path) -> Result<Self> {
        let config = from_raw(raw).map_err(|msg| Error::config(source, msg))?;
        config.validate(source)?;
        Ok(config)
    }

    /// Checks what the types cannot: at least one key, finite weights, ordered clip bounds,
    /// no per-key normalisation in `sum_then_normalize`, a positive `eps` and a momentum in
    /// [0, 1). Errors name `source` and the key or field.
    pub fn validate(&self, source: impl AsRef<Path>) -> Result<()> {
        let source = source.as_ref();
        let err = |msg: String| Err(Error::config(source, msg));
        if self.keys.is_empty() {
            return err("the reward mixer has no keys: give at least one `key: weight`".into());
        }
        for (key, kc) in &self.keys {
            if !kc.weight.is_finite() {
                return err(format!("key `{key}`: weight must be a finite number, got {}", kc.weight));
            }
            if let Some(clip) = kc.clip {
                check_clip(clip).or_else(|m| err(format!("key `{key}`: {m}")))?;
            }
            if self.mode == MixMode::SumThenNormalize && kc.normalize.is_some() {
                return err(format!(
                    "key `{key}`: a per-key `normalize` has no effect in mode sum_then_normalize \
                     (the top-level `normalize` applies to the weighted sum); remove it or use normalize_then_sum"
                ));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return err(format!("`eps` must be a positive finite number, got {}", self.eps));
        }
        if !(0.0..1.0).contains(&self.running_momentum) {
            return err(format!("`running_momentum` must be in [0, 1), got {}", self.running_momentum));
        }
        if let Some(clip) = self.final_clip {
            check_clip(clip).or_else(|m| err(format!("`final_clip`: {m}")))?;
        }
        Ok(())
    }
}

impl Default for MixerConfig {
    /// No keys, `normalize_then_sum`, no normalisation, errors on missing and non-finite
    /// values, eps 1e-6, momentum 0.99, no final clip.
    fn default() -> Self {
        MixerConfig {
            keys: BTreeMap::new(),
            mode: MixMode::NormalizeThenSum,
            normalize: Normalize::None,
            missing: ValuePolicy::Error,
            nan: ValuePolicy::Error,
            eps: 1e-6,
            running_momentum: 0.99,
            final_clip: None,
        }
    }
}

fn check_clip((lo, hi): (f64, f64)) -> std::result::Result<(), String> {
    if lo.is_nan() || hi.is_nan() {
        Err(format!("clip [{lo}, {hi}] has a NaN bound"))
    } else if lo > hi {
        Err(format!("clip [{lo}, {hi}] has lo > hi"))
    } else {
        Ok(())
    }
}

/// A parsed document of any of the three formats, keeping what `serde_json::Value` cannot: NaN
/// and infinite numbers (so `weight: .nan` is reported as NaN, not as "not a number") and
/// duplicate keys (reported, not silently overwritten).
#[derive(Debug)]
enum Raw {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Seq(Vec<Raw>),
    Map(Vec<(String, Raw)>),
}

impl Raw {
    fn kind(&self) -> String {
        match self {
            Raw::Null => "null".into(),
            Raw::Bool(b) => format!("boolean {b}"),
            Raw::Num(x) => format!("number {x}"),
            Raw::Str(s) => format!("string {s:?}"),
            Raw::Seq(_) => "a list".into(),
            Raw::Map(_) => "a map".into(),
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a reward mixer configuration")
            }
            fn visit_unit<E>(self) -> std::result::Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> std::result::Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Raw, D::Error> {
                Raw::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> std::result::Result<Raw, E> {
                Ok(Raw::Bool(b))
            }
            fn visit_i64<E>(self, x: i64) -> std::result::Result<Raw, E> {
                Ok(Raw::Num(x as f64))
            }
            fn visit_u64<E>(self, x: u64) -> std::result::Result<Raw, E> {
                Ok(Raw::Num(x as f64))
            }
            fn visit_f64<E>(self, x: f64) -> std::result::Result<Raw, E> {
                Ok(Raw::Num(x))
            }
            fn visit_str<E>(self, s: &str) -> std::result::Result<Raw, E> {
                Ok(Raw::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> std::result::Result<Raw, E> {
                Ok(Raw::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Raw, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element()? {
                    out.push(x);
                }
                Ok(Raw::Seq(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Raw, A::Error> {
                let mut out: Vec<(String, Raw)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<Raw, Raw>()? {
                    let Raw::Str(k) = k else {
                        return Err(de::Error::custom(format!("map keys must be strings, got {}", k.kind())));
                    };
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(de::Error::custom(format!("duplicate key `{k}`")));
                    }
                    out.push((k, v));
                }
                Ok(Raw::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

const TOP_FIELDS: &str = "keys, mode, normalize, missing, nan, eps, running_momentum, final_clip";
const KEY_FIELDS: &str = "weight, normalize, clip, missing, nan, optional";

/// Builds a config from a parsed document; the error is a message naming the key or field, to
/// which the caller adds the file.
fn from_raw(raw: Raw) -> std::result::Result<MixerConfig, String> {
    let Raw::Map(top) = raw else {
        return Err(format!(
            "expected a map of `key: weight` or a table with `keys:` ({TOP_FIELDS}), got {}",
            raw.kind()
        ));
    };
    let rich = top.iter().any(|(k, v)| k == "keys" && matches!(v, Raw::Map(_)));
    let mut config = MixerConfig::default();
    if !rich {
        for (key, v) in top {
            match v {
                Raw::Num(w) => {
                    config.keys.insert(key, KeyConfig::weight(w));
                }
                other => {
                    return Err(format!(
                        "key `{key}`: expected a number (its weight), got {}; per-key options go in the full form, \
                         under a `keys:` table",
                        other.kind()
                    ))
                }
            }
        }
        return Ok(config);
    }
    for (field, v) in top {
        let at = |m: String| format!("`{field}`: {m}");
        match field.as_str() {
            "keys" => {
                let Raw::Map(keys) = v else { unreachable!("checked above: `keys` is a map") };
                for (key, kv) in keys {
                    let kc = key_config(kv).map_err(|m| format!("key `{key}`: {m}"))?;
                    config.keys.insert(key, kc);
                }
            }
            "mode" => {
                config.mode = match string(&v).map_err(at)? {
                    "normalize_then_sum" => MixMode::NormalizeThenSum,
                    "sum_then_normalize" => MixMode::SumThenNormalize,
                    s => {
                        return Err(at(format!(
                            "unknown mode {s:?} (expected normalize_then_sum or sum_then_normalize)"
                        )))
                    }
                }
            }
            "normalize" => config.normalize = normalize(&v).map_err(at)?,
            "missing" => config.missing = policy(&v).map_err(at)?,
            "nan" => config.nan = policy(&v).map_err(at)?,
            "eps" => config.eps = number(&v).map_err(at)?,
            "running_momentum" => config.running_momentum = number(&v).map_err(at)?,
            "final_clip" => config.final_clip = optional(&v, clip).map_err(at)?,
            _ => return Err(format!("unknown field `{field}` (expected one of {TOP_FIELDS})")),
        }
    }
    Ok(config)
}

fn key_config(v: Raw) -> std::result::Result<KeyConfig, String> {
    let fields = match v {
        Raw::Num(w) => return Ok(KeyConfig::weight(w)),
        Raw::Map(fields) => fields,
        other => return Err(format!("expected a weight or a table of {KEY_FIELDS}, got {}", other.kind())),
    };
    let mut kc = KeyConfig::weight(f64::NAN);
    let mut has_weight = false;
    for (field, v) in fields {
        let at = |m: String| format!("`{field}`: {m}");
        match field.as_str() {
            "weight" => {
                kc.weight = number(&v).map_err(at)?;
                has_weight = true;
            }
            "normalize" => kc.normalize = optional(&v, normalize).map_err(at)?,
            "clip" => kc.clip = optional(&v, clip).map_err(at)?,
            "missing" => kc.missing = optional(&v, policy).map_err(at)?,
            "nan" => kc.nan = optional(&v, policy).map_err(at)?,
            "optional" => match v {
                Raw::Bool(b) => kc.optional = b,
                other => return Err(at(format!("expected true or false, got {}", other.kind()))),
            },
            _ => return Err(format!("unknown field `{field}` (expected one of {KEY_FIELDS})")),
        }
    }
    if !has_weight {
        return Err("no `weight`".into());
    }
    Ok(kc)
}

fn optional<T>(v: &Raw, f: fn(&Raw) -> std::result::Result<T, String>) -> std::result::Result<Option<T>, String> {
    match v {
        Raw::Null => Ok(None),
        v => f(v).map(Some),
    }
}

fn number(v: &Raw) -> std::result::Result<f64, String> {
    match v {
        Raw::Num(x) => Ok(*x),
        other => Err(format!("expected a number, got {}", other.kind())),
    }
}

fn string(v: &Raw) -> std::result::Result<&str, String> {
    match v {
        Raw::Str(s) => Ok(s),
        other => Err(format!("expected a string, got {}", other.kind())),
    }
}

fn normalize(v: &Raw) -> std::result::Result<Normalize, String> {
    match string(v)? {
        "none" => Ok(Normalize::None),
        "group" => Ok(Normalize::Group),
        "batch" => Ok(Normalize::Batch),
        "running" => Ok(Normalize::Running),
        s => Err(format!("unknown normalisation {s:?} (expected none, group, batch or running)")),
    }
}

fn policy(v: &Raw) -> std::result::Result<ValuePolicy, String> {
    match string(v)? {
        "error" => Ok(ValuePolicy::Error),
        "zero" => Ok(ValuePolicy::Zero),
        "skip" => Ok(ValuePolicy::Skip),
        s => Err(format!("unknown policy {s:?} (expected error, zero or skip)")),
    }
}

fn clip(v: &Raw) -> std::result::Result<(f64, f64), String> {
    match v {
        Raw::Seq(xs) if xs.len() == 2 => Ok((number(&xs[0])?, number(&xs[1])?)),
        other => Err(format!("expected [lo, hi], got {}", other.kind())),
    }
}

/// The source name used in errors for a configuration built in code.
pub(crate) fn inline_source() -> PathBuf {
    PathBuf::from("<reward mixer config>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, format: ConfigFormat) -> Result<MixerConfig> {
        MixerConfig::parse(text, format, "mix.cfg")
    }

    #[test]
    fn bare_and_full_forms_agree_across_formats() {
        let yaml =
            parse("correctness: 1.0\nreasoning_quality: 0.5\nformat_penalty: -0.25\n", ConfigFormat::Yaml).unwrap();
        let json =
            parse(r#"{"correctness": 1, "reasoning_quality": 0.5, "format_penalty": -0.25}"#, ConfigFormat::Json)
                .unwrap();
        let toml =
            parse("correctness = 1.0\nreasoning_quality = 0.5\nformat_penalty = -0.25\n", ConfigFormat::Toml).unwrap();
        let expect =
            MixerConfig::from_weights([("correctness", 1.0), ("reasoning_quality", 0.5), ("format_penalty", -0.25)]);
        assert_eq!(yaml, expect);
        assert_eq!(json, expect);
        assert_eq!(toml, expect);

        let full = parse(
            "mode: sum_then_normalize\nnormalize: running\nmissing: zero\nnan: skip\neps: 0.001\n\
             running_momentum: 0.5\nfinal_clip: [-2, 2]\nkeys:\n  a: 2\n  b: {weight: -1, clip: [0, 1], optional: true, missing: skip}\n",
            ConfigFormat::Yaml,
        )
        .unwrap();
        assert_eq!(full.mode, MixMode::SumThenNormalize);
        assert_eq!(
            (full.normalize, full.missing, full.nan),
            (Normalize::Running, ValuePolicy::Zero, ValuePolicy::Skip)
        );
        assert_eq!((full.eps, full.running_momentum, full.final_clip), (0.001, 0.5, Some((-2.0, 2.0))));
        assert_eq!(full.keys["a"], KeyConfig::weight(2.0));
        let b = &full.keys["b"];
        assert_eq!((b.weight, b.clip, b.optional, b.missing), (-1.0, Some((0.0, 1.0)), true, Some(ValuePolicy::Skip)));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases: &[(&str, ConfigFormat, &[&str])] = &[
            ("a: 1\nb: .nan\n", ConfigFormat::Yaml, &["`b`", "NaN"]),
            ("a = inf\n", ConfigFormat::Toml, &["`a`", "inf"]),
            ("keys:\n  a: {weight: 1, normalize: grup}\n", ConfigFormat::Yaml, &["`a`", "`normalize`", "grup"]),
            ("keys:\n  a: {weight: 1, clip: [2, 1]}\n", ConfigFormat::Yaml, &["`a`", "lo > hi"]),
            ("keys:\n  a: {weight: 1, clp: [0, 1]}\n", ConfigFormat::Yaml, &["`a`", "`clp`"]),
            ("keys:\n  a: {clip: [0, 1]}\n", ConfigFormat::Yaml, &["`a`", "no `weight`"]),
            ("a: {weight: 1}\n", ConfigFormat::Yaml, &["`a`", "keys:"]),
            ("keys: {a: 1}\nmode: sum\n", ConfigFormat::Yaml, &["`mode`", "\"sum\""]),
            ("keys: {a: 1}\nnromalize: batch\n", ConfigFormat::Yaml, &["`nromalize`"]),
            ("keys: {a: 1}\nrunning_momentum: 1.0\n", ConfigFormat::Yaml, &["running_momentum"]),
            ("keys: {a: 1}\nfinal_clip: [1]\n", ConfigFormat::Yaml, &["final_clip", "[lo, hi]"]),
            (
                "keys: {a: {weight: 1, normalize: group}}\nmode: sum_then_normalize\n",
                ConfigFormat::Yaml,
                &["`a`", "sum_then_normalize"],
            ),
            ("{\"a\": 1, \"a\": 2}", ConfigFormat::Json, &["duplicate", "`a`"]),
            ("{\"a\": 1,", ConfigFormat::Json, &["not valid JSON"]),
            ("{}", ConfigFormat::Json, &["no keys"]),
            ("", ConfigFormat::Yaml, &["expected a map"]),
        ];
        for (text, format, needles) in cases {
            let e = parse(text, *format).unwrap_err().to_string();
            assert!(e.starts_with("mix.cfg: "), "{text:?}: {e}");
            for n in *needles {
                assert!(e.contains(n), "{text:?}: `{n}` not in: {e}");
            }
        }
    }
}
