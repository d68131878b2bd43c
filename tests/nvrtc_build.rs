//! The kernel table `build.rs` embeds for the CUDA backend (`backend::cuda::ptx`): every
//! `kernels/*.cu` with its kernel names, and, when NVRTC was found at build time, PTX that
//! really defines those kernels for the advertised architecture.
//!
//! With `GEPA_REQUIRE_PTX=1` (set by `.ci/run`) a build without PTX is a failure, not a skip:
//! that is what guarantees NVRTC ran in CI.

use gepa_dapo_grn::backend::cuda::ptx;
use std::path::Path;

/// `extern "C" __global__` kernel names in a CUDA source, found independently of `build.rs`'s
/// scan (token by token instead of by string search) so the two cross-check each other.
fn scan(source: &str) -> Vec<String> {
    let tokens = tokenize(&strip_comments(source));
    let mut names = Vec::new();
    for i in 0..tokens.len() {
        if tokens[i] != "extern" || tokens.get(i + 1).map(String::as_str) != Some("\"C\"") {
            continue;
        }
        if tokens.get(i + 2).map(String::as_str) != Some("__global__") {
            continue;
        }
        // The name is the identifier right before the first `(` that does not belong to an
        // attribute such as `__launch_bounds__(...)`.
        let mut j = i + 3;
        while j + 1 < tokens.len() {
            if tokens[j + 1] == "(" {
                if tokens[j].starts_with("__") {
                    while j < tokens.len() && tokens[j] != ")" {
                        j += 1;
                    }
                } else {
                    names.push(tokens[j].clone());
                    break;
                }
            }
            j += 1;
        }
    }
    names
}

/// Identifiers, string literals and single punctuation characters.
fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let mut token = String::from(c);
        if c.is_ascii_alphanumeric() || c == '_' {
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_alphanumeric() || **d == '_') {
                token.push(d);
                chars.next();
            }
        } else if c == '"' {
            for d in chars.by_ref() {
                token.push(d);
                if d == '"' {
                    break;
                }
            }
        }
        tokens.push(token);
    }
    tokens
}

fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |n| &after[n..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |n| &after[n + 2..]);
            out.push(' ');
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

#[test]
fn every_kernel_file_is_embedded_with_its_kernels() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let embedded: Vec<&str> = ptx::sources().iter().map(|s| s.file).collect();
    assert_eq!(embedded, on_disk, "sources() must list every kernels/*.cu, sorted by name");

    for src in ptx::sources() {
        let text = std::fs::read_to_string(dir.join(src.file)).unwrap();
        assert_eq!(src.source, text, "{}: embedded source differs from the file", src.file);
        assert!(!src.kernels.is_empty(), "{}: no extern \"C\" __global__ kernel found", src.file);
        assert_eq!(src.kernels, scan(&text), "{}: kernel list differs from an independent scan", src.file);
        for k in src.kernels {
            assert_eq!(ptx::source_of(k).map(|s| s.file), Some(src.file), "source_of({k})");
        }
    }
    assert!(ptx::source_of("no_such_kernel").is_none());

    let headers: Vec<&str> = ptx::headers().iter().map(|(n, _)| *n).collect();
    assert!(headers.contains(&"common.cuh"), "headers() must carry common.cuh, has {headers:?}");
    for (name, text) in ptx::headers() {
        assert_eq!(*text, std::fs::read_to_string(dir.join(name)).unwrap(), "header {name}");
    }
    assert!(ptx::arch().starts_with("compute_"), "arch() = {}", ptx::arch());
}

#[test]
fn embedded_ptx_defines_every_kernel_for_the_arch() {
    let with_ptx = ptx::sources().iter().filter(|s| s.ptx.is_some()).count();
    if with_ptx == 0 {
        let why = "no PTX embedded: build.rs found no NVRTC (set NVRTC_LIB_DIR to a directory holding libnvrtc.so*)";
        assert!(std::env::var("GEPA_REQUIRE_PTX").as_deref() != Ok("1"), "GEPA_REQUIRE_PTX=1 but {why}");
        eprintln!("skipped: {why}");
        return;
    }
    assert_eq!(with_ptx, ptx::sources().len(), "PTX is embedded for some files only");
    let version = ptx::nvrtc_version().expect("PTX embedded without an NVRTC version");
    assert!(version.split('.').all(|p| p.parse::<u32>().is_ok()), "nvrtc_version() = {version}");

    // `compute_80` PTX says `.target sm_80` (possibly followed by `, debug` and the like).
    let target = format!("sm_{}", ptx::arch().strip_prefix("compute_").unwrap());
    for src in ptx::sources() {
        let text = src.ptx.unwrap();
        let targets: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".target"))
            .map(|rest| rest.split([',', ' ', '\t']).find(|s| !s.is_empty()).unwrap_or(""))
            .collect();
        assert_eq!(targets, [target.as_str()], "{}: .target lines", src.file);
        for k in src.kernels {
            let defined = text.lines().any(|l| {
                let l = l.trim_start();
                let l = l.strip_prefix(".visible").map_or(l, str::trim_start);
                l.strip_prefix(".entry").is_some_and(|rest| {
                    rest.trim_start().strip_prefix(k).is_some_and(|r| r.trim_start().starts_with('('))
                })
            });
            assert!(defined, "{}: PTX (NVRTC {version}) has no `.entry {k}(`", src.file);
        }
    }
}

/// The emulator's test fixtures (`kernels/emu/fixtures/*.cu`) are built for the emulator, and
/// checked by NVRTC when the build had it, but are not among the kernels the CUDA backend loads.
#[test]
fn emulator_fixtures_are_emulated_but_not_embedded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/emu/fixtures");
    let mut fixtures: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    fixtures.sort();
    assert!(fixtures.contains(&"reduce.cu".to_string()), "kernels/emu/fixtures has {fixtures:?}");
    let emulated: Vec<&str> = gepa_dapo_grn::backend::emu::EmuDevice::new().kernel_names().collect();
    for file in &fixtures {
        assert!(ptx::sources().iter().all(|s| s.file != file.as_str()), "fixture {file} is embedded");
        let kernels = scan(&std::fs::read_to_string(dir.join(file)).unwrap());
        assert!(!kernels.is_empty(), "fixture {file}: no kernel found");
        for k in &kernels {
            assert!(ptx::source_of(k).is_none(), "fixture kernel {k} ({file}) is in the CUDA backend's table");
            assert!(emulated.contains(&k.as_str()), "fixture kernel {k} ({file}) is not compiled for the emulator");
        }
        // NVRTC compiled it too (to keep it valid CUDA), next to the embedded PTX.
        if ptx::nvrtc_version().is_some() {
            let stem = file.strip_suffix(".cu").unwrap();
            let out = Path::new(env!("OUT_DIR")).join("ptx/fixtures").join(format!("{stem}.ptx"));
            let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
            for k in &kernels {
                assert!(text.contains(&format!(".entry {k}(")), "{}: no `.entry {k}(`", out.display());
            }
        }
    }
}
