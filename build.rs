//! Build script.
//!
//! Kernel emulation (DESIGN.md, "Testing where there is no GPU"): every `kernels/*.cu` is
//! compiled for the host as C++20 with `kernels/emu/emulate.h`, into one static library linked
//! into the crate. For each `.cu` file a host `.cpp` is generated in `OUT_DIR` that includes the
//! emulation header, then the `.cu` source, then defines one entry point
//!
//! ```c
//! extern "C" int emu_<kernel>(unsigned gx, unsigned gy, unsigned gz,
//!                             unsigned bx, unsigned by, unsigned bz,
//!                             unsigned shared_bytes, void **args,
//!                             const size_t *arg_sizes, size_t nargs);
//! ```
//!
//! per `extern "C" __global__` kernel found by a simple scan of the source. `OUT_DIR/emu_kernels.rs`
//! declares them and lists them by name for `src/backend/emu/`. Only a host C++ compiler is
//! needed. Without one the build still succeeds (a `cargo:warning`, an empty kernel table);
//! with one, a kernel that does not compile fails the build.
//!
//! The NVRTC (PTX) half of the kernel build comes with the CUDA backend.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");

    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let kernels_dir = manifest.join("kernels");

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "cu") && p.is_file())
                .collect()
        })
        .unwrap_or_default();
    sources.sort();

    let mut kernels: Vec<String> = Vec::new();
    let mut wrappers: Vec<PathBuf> = Vec::new();
    for src in &sources {
        let text = std::fs::read_to_string(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
        let names = scan_kernels(&text);
        for n in &names {
            if kernels.contains(n) {
                panic!("kernel `{n}` is defined in more than one kernels/*.cu file; kernel names must be unique");
            }
        }
        let stem = src.file_stem().and_then(|s| s.to_str()).expect("kernel file name");
        let wrapper = out.join(format!("emu_{stem}.cpp"));
        std::fs::write(&wrapper, wrapper_cpp(src, &names)).expect("writing emulation wrapper");
        wrappers.push(wrapper);
        kernels.extend(names);
    }

    let compiled = !wrappers.is_empty() && compile(&kernels_dir, &wrappers);
    let table = if compiled { &kernels[..] } else { &[][..] };
    std::fs::write(out.join("emu_kernels.rs"), kernels_rs(table)).expect("writing emu_kernels.rs");
}

/// Compiles the wrappers into `libgepa_emu_kernels.a`; false (with a warning) when there is no
/// working C++ compiler. A compile error in a kernel panics: the sources are broken.
fn compile(kernels_dir: &Path, wrappers: &[PathBuf]) -> bool {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .include(kernels_dir)
        .opt_level(2)
        .flag_if_supported("-pthread")
        .flag_if_supported("-Wno-unknown-pragmas")
        .flag_if_supported("-Wno-unused-parameter")
        .files(wrappers);
    let usable = build
        .try_get_compiler()
        .ok()
        .and_then(|tool| tool.to_command().arg("--version").output().ok())
        .is_some_and(|o| o.status.success());
    if !usable {
        println!(
            "cargo:warning=no working host C++ compiler: kernels/*.cu are not compiled for emulation, \
             the emulated-kernel tests will fail"
        );
        return false;
    }
    if let Err(e) = build.try_compile("gepa_emu_kernels") {
        panic!("compiling kernels/*.cu for host emulation failed: {e}");
    }
    true
}

/// Names of the `extern "C" __global__` functions in a CUDA source (comments ignored).
fn scan_kernels(src: &str) -> Vec<String> {
    let text = strip_comments(src);
    let mut names = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("extern \"C\"") {
        rest = &rest[at + "extern \"C\"".len()..];
        let after = rest.trim_start();
        let Some(mut decl) = after.strip_prefix("__global__") else { continue };
        // Skip `__launch_bounds__(...)` and similar before the parameter list.
        let mut name = None;
        while let Some(open) = decl.find('(') {
            let ident = last_ident(&decl[..open]);
            if ident.starts_with("__") {
                let close = decl[open..].find(')').map_or(decl.len(), |c| open + c + 1);
                decl = &decl[close..];
                continue;
            }
            name = Some(ident.to_string());
            break;
        }
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            names.push(n);
        }
    }
    names
}

fn last_ident(s: &str) -> &str {
    let s = s.trim_end();
    let start = s.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    &s[start..]
}

fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

fn wrapper_cpp(src: &Path, kernels: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "// Generated by build.rs: host emulation of {}.", src.display());
    s.push_str("#include \"emu/emulate.h\"\n");
    let _ = writeln!(s, "#include \"{}\"", src.display().to_string().replace('\\', "/"));
    for k in kernels {
        let _ = writeln!(
            s,
            "extern \"C\" int emu_{k}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, \
             unsigned bz, unsigned shared_bytes, void** args, const std::size_t* arg_sizes, std::size_t nargs) {{\n    \
             return emu::launch(&{k}, dim3(gx, gy, gz), dim3(bx, by, bz), shared_bytes, args, arg_sizes, nargs);\n}}"
        );
    }
    s
}

fn kernels_rs(kernels: &[String]) -> String {
    let mut s = String::from("// Generated by build.rs: the emulated kernels (kernels/*.cu compiled for the host).\n");
    s.push_str("extern \"C\" {\n");
    for k in kernels {
        let _ = writeln!(
            s,
            "    fn emu_{k}(gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, shared_bytes: u32, \
             args: *mut *mut ::std::ffi::c_void, arg_sizes: *const usize, nargs: usize) -> i32;"
        );
    }
    s.push_str("}\n\n/// Every emulated kernel by name, in source order.\nstatic KERNELS: &[(&str, EmuEntry)] = &[\n");
    for k in kernels {
        let _ = writeln!(s, "    (\"{k}\", emu_{k}),");
    }
    s.push_str("];\n");
    s
}
