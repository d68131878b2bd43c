//! The one reader of settings files: the reward mixer's weights
//! ([`crate::reward::MixerConfig::from_file`]), `dapo train --config`
//! ([`crate::train::settings::read_tree`]) and safety rules
//! ([`crate::rl::safety::SafetyConfig::from_path`]) are all YAML, JSON or TOML, chosen by the
//! file's extension. Reading them in one place keeps the three from drifting apart in what they
//! accept (a byte-order mark, YAML enums written as maps) and in how their errors read.
//!
//! Every error is an [`Error::Config`] naming the file. A syntax or type error keeps the
//! parser's own message, which gives the line (and column) where the parser knows it.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The formats a settings file can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigFormat {
    /// `.yaml` or `.yml`.
    Yaml,
    /// `.json`.
    Json,
    /// `.toml`.
    Toml,
}

impl ConfigFormat {
    /// The format named by `path`'s extension (case-insensitive); an error naming the file for
    /// any other extension, rather than guessing.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("yaml" | "yml") => Ok(ConfigFormat::Yaml),
            Some("json") => Ok(ConfigFormat::Json),
            Some("toml") => Ok(ConfigFormat::Toml),
            _ => Err(Error::config(
                path,
                "unknown config file format: the extension must be .yaml, .yml, .json or .toml",
            )),
        }
    }

    /// The format's name as errors print it (`YAML`, `JSON`, `TOML`).
    pub fn name(self) -> &'static str {
        match self {
            ConfigFormat::Yaml => "YAML",
            ConfigFormat::Json => "JSON",
            ConfigFormat::Toml => "TOML",
        }
    }
}

/// Reads `path` in the format its extension names ([`ConfigFormat::from_path`]) into a `T`.
/// Errors name the file: an unknown extension, an unreadable file, or text that is not valid
/// in the format or does not fit `T`.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let format = ConfigFormat::from_path(path)?;
    let text = crate::error::read_to_string(path)?;
    parse(&text, format, path)
}

/// Parses `text` in `format` into a `T`; `source` names it in errors (`<source>: not valid
/// YAML: <the parser's message>`).
pub fn parse<T: DeserializeOwned>(text: &str, format: ConfigFormat, source: &Path) -> Result<T> {
    // A byte-order mark is not part of the document (editors on Windows write one).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bad = |e: &dyn std::fmt::Display| Error::config(source, format!("not valid {}: {e}", format.name()));
    match format {
        // YAML's own enum syntax is a tag (`!above 0.5`); the singleton-map adapter reads enums
        // as `{ above: 0.5 }` instead, the shape JSON and TOML write, so one document means the
        // same in every format. Types without enums (a tree of values) read as plain YAML.
        ConfigFormat::Yaml => {
            serde_norway::with::singleton_map_recursive::deserialize(serde_norway::Deserializer::from_str(text))
                .map_err(|e| bad(&e))
        }
        ConfigFormat::Json => serde_json::from_str(text).map_err(|e| bad(&e)),
        ConfigFormat::Toml => toml::from_str(text).map_err(|e| bad(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum When {
        Above(f64),
        NonFinite,
    }

    #[derive(Clone, Debug, PartialEq, serde::Deserialize)]
    struct Doc {
        name: String,
        when: When,
    }

    #[test]
    fn extensions_pick_the_format() {
        assert_eq!(ConfigFormat::from_path(Path::new("m.YML")).unwrap(), ConfigFormat::Yaml);
        assert_eq!(ConfigFormat::from_path(Path::new("m.toml")).unwrap(), ConfigFormat::Toml);
        assert_eq!(ConfigFormat::from_path(Path::new("m.Json")).unwrap(), ConfigFormat::Json);
        for bad in ["dir/m.ini", "dir/noext"] {
            let e = ConfigFormat::from_path(Path::new(bad)).unwrap_err().to_string();
            assert!(e.starts_with(bad) && e.contains("unknown config file format") && e.contains(".yaml"), "{e}");
        }
    }

    #[test]
    fn one_document_reads_the_same_in_every_format() {
        let want = Doc { name: "kl".into(), when: When::Above(0.5) };
        let src = Path::new("s");
        let yaml_map: Doc = parse("name: kl\nwhen: { above: 0.5 }\n", ConfigFormat::Yaml, src).unwrap();
        let json: Doc = parse(r#"{"name": "kl", "when": {"above": 0.5}}"#, ConfigFormat::Json, src).unwrap();
        let toml: Doc = parse("name = \"kl\"\nwhen = { above = 0.5 }\n", ConfigFormat::Toml, src).unwrap();
        assert_eq!([yaml_map, json, toml], [want.clone(), want.clone(), want]);
        let unit: Doc = parse("\u{feff}name: x\nwhen: non_finite\n", ConfigFormat::Yaml, src).unwrap();
        assert_eq!(unit.when, When::NonFinite);
    }

    #[test]
    fn errors_name_the_file_the_format_and_the_line() {
        let src = Path::new("dir/s.cfg");
        let cases = [
            (ConfigFormat::Yaml, "name: kl\nwhen: [0.5\n"),
            (ConfigFormat::Json, "{\"name\": \"kl\",\n \"when\": }"),
            (ConfigFormat::Toml, "name = \"kl\"\nwhen = = 1\n"),
        ];
        for (format, text) in cases {
            let e = parse::<Doc>(text, format, src).unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{e}");
            let e = e.to_string();
            assert!(e.starts_with(&format!("dir/s.cfg: not valid {}: ", format.name())), "{e}");
            assert!(e.contains("line 2"), "{format:?}: {e}");
        }
        // A type error is the parser's too, with its place.
        let e = parse::<Doc>("name: kl\nwhen: { sideways: 1 }\n", ConfigFormat::Yaml, src).unwrap_err().to_string();
        assert!(e.contains("sideways") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn read_names_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.yaml");
        let e = read::<Doc>(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
    }
}
