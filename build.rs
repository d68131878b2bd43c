//! Build script.
//!
//! Two sets of CUDA sources: the product's kernels, `kernels/*.cu`, which the CUDA backend
//! loads, and the emulator's test fixtures, `kernels/emu/fixtures/*.cu` (kernels that only
//! `tests/emulator.rs` launches: plain reductions, negative controls, emulator corner cases),
//! which are built for the emulator and checked by NVRTC but never embedded for the GPU.
//!
//! Kernel emulation (DESIGN.md, "Testing where there is no GPU"): every `.cu` of both sets is
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
//! per `extern "C" __global__` kernel found by a simple scan of the source (kernel names are
//! unique across both sets). `OUT_DIR/emu_kernels.rs` declares them and lists them by name for
//! `src/backend/emu/`. Only a host C++ compiler is needed. Without one the build still succeeds
//! (a `cargo:warning`, an empty kernel table); with one, a kernel that does not compile fails
//! the build.
//!
//! PTX for the GPU: when NVRTC can be loaded (searched for at build time, never linked: see
//! [`Nvrtc::find`] for the order, `NVRTC_LIB_DIR` first), every `.cu` of both sets is also
//! compiled by NVRTC to PTX for a virtual architecture (`compute_80`, or env `GEPA_CUDA_ARCH`),
//! with the `kernels/*.cuh` headers handed to NVRTC by name because there are no CUDA headers
//! to include. The product's PTX lands in `OUT_DIR/ptx/<file>.ptx`, and `OUT_DIR/cuda_kernels.rs`
//! (included by `src/backend/cuda/ptx.rs`) embeds it, with the sources, the headers and the
//! kernel names, so the GPU backend loads modules without compiling anything. The fixtures' PTX
//! goes to `OUT_DIR/ptx/fixtures/` and is not embedded: compiling it only keeps the fixtures
//! valid CUDA. A kernel NVRTC rejects fails the build with NVRTC's log. Without NVRTC the build
//! still succeeds (one `cargo:warning`); the table then has no PTX and the CUDA backend compiles
//! the embedded sources at first use.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for var in ["NVRTC_LIB_DIR", "CUDA_PATH", "CUDA_HOME", "GEPA_CUDA_ARCH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let kernels_dir = manifest.join("kernels");
    let fixtures_dir = kernels_dir.join("emu").join("fixtures");

    let product = read_units(&kernels_dir);
    let fixtures = read_units(&fixtures_dir);
    let mut kernels: Vec<String> = Vec::new();
    let mut wrappers: Vec<PathBuf> = Vec::new();
    let sets = [(&product, "emu_"), (&fixtures, "emu_fixture_")];
    for (units, prefix) in sets {
        for unit in units.iter() {
            for n in &unit.kernels {
                if kernels.contains(n) {
                    panic!(
                        "kernel `{n}` is defined in more than one file of kernels/*.cu and kernels/emu/fixtures/*.cu; \
                         kernel names must be unique"
                    );
                }
            }
            let stem = unit.path.file_stem().and_then(|s| s.to_str()).expect("kernel file name");
            let wrapper = out.join(format!("{prefix}{stem}.cpp"));
            std::fs::write(&wrapper, wrapper_cpp(&unit.path, &unit.kernels)).expect("writing emulation wrapper");
            wrappers.push(wrapper);
            kernels.extend(unit.kernels.iter().cloned());
        }
    }

    let compiled = !wrappers.is_empty() && compile(&kernels_dir, &wrappers);
    let table = if compiled { &kernels[..] } else { &[][..] };
    std::fs::write(out.join("emu_kernels.rs"), kernels_rs(table)).expect("writing emu_kernels.rs");

    let headers = read_headers(&kernels_dir);
    let arch = cuda_arch();
    let ptx = compile_ptx(&out, &product, &fixtures, &headers, &arch);
    std::fs::write(out.join("cuda_kernels.rs"), cuda_kernels_rs(&product, &headers, &arch, ptx.as_ref()))
        .expect("writing cuda_kernels.rs");
}

/// The files in `dir` (not below it) whose name ends in `.{ext}`, sorted; none when `dir` does
/// not exist.
fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == ext) && p.is_file())
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
}

/// Every `*.cu` directly in `dir`, sorted, with its text and kernels.
fn read_units(dir: &Path) -> Vec<Unit> {
    files_with_extension(dir, "cu")
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let kernels = scan_kernels(&text);
            Unit { path, text, kernels }
        })
        .collect()
}

/// One `.cu` file (of `kernels/` or `kernels/emu/fixtures/`) as the build sees it.
struct Unit {
    path: PathBuf,
    text: String,
    /// Its `extern "C" __global__` kernels, by [`scan_kernels`].
    kernels: Vec<String>,
}

/// The PTX of every product unit (same order), and the NVRTC version that made it.
struct Ptx {
    version: String,
    files: Vec<PathBuf>,
}

/// Every `kernels/*.cuh`, sorted, as (file name, absolute path, text): the headers a `.cu` may
/// include. NVRTC gets them by name (it has no include path to search here).
fn read_headers(kernels_dir: &Path) -> Vec<(String, PathBuf, String)> {
    files_with_extension(kernels_dir, "cuh")
        .into_iter()
        .map(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).expect("header file name").to_string();
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (name, p, text)
        })
        .collect()
}

/// The virtual architecture the PTX targets: `compute_80` unless `GEPA_CUDA_ARCH` says
/// otherwise. PTX for `compute_80` loads on Ampere and every later GPU (the driver JIT-compiles
/// it forward). Only `compute_*` is accepted: a real architecture (`sm_*`) is for cubins, which
/// are tied to one GPU family and are not what is embedded.
fn cuda_arch() -> String {
    match std::env::var("GEPA_CUDA_ARCH") {
        Ok(a) if !a.trim().is_empty() => {
            let a = a.trim().to_string();
            let digits = a.strip_prefix("compute_").unwrap_or("");
            if !digits.starts_with(|c: char| c.is_ascii_digit()) || !digits.chars().all(|c| c.is_ascii_alphanumeric()) {
                panic!("GEPA_CUDA_ARCH={a:?}: expected a virtual architecture such as compute_80 or compute_90");
            }
            a
        }
        _ => "compute_80".to_string(),
    }
}

/// Compiles every product unit to `OUT_DIR/ptx/<stem>.ptx` (returned, for embedding) and every
/// fixture to `OUT_DIR/ptx/fixtures/<stem>.ptx` (only to check that NVRTC accepts it). None
/// (with one warning) when NVRTC cannot be loaded; panics with NVRTC's log when a kernel does
/// not compile.
fn compile_ptx(
    out: &Path,
    product: &[Unit],
    fixtures: &[Unit],
    headers: &[(String, PathBuf, String)],
    arch: &str,
) -> Option<Ptx> {
    let (nvrtc, notes) = Nvrtc::find();
    let Some(nvrtc) = nvrtc else {
        let tried = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
        println!(
            "cargo:warning=NVRTC not found{tried}: no PTX embedded; kernels/*.cu will be compiled with NVRTC at \
             first use on a GPU host. Set NVRTC_LIB_DIR to a directory holding libnvrtc.so* to embed PTX."
        );
        return None;
    };
    for note in notes.iter().filter(|n| n.starts_with("NVRTC_LIB_DIR")) {
        // An explicit directory that does not work is worth a warning even though NVRTC was
        // found elsewhere: the PTX then comes from another NVRTC than the one asked for.
        println!("cargo:warning={note}");
    }
    let version = nvrtc.version();
    let options = [format!("--gpu-architecture={arch}"), "--std=c++17".to_string(), "-lineinfo".to_string()];
    let header_refs: Vec<(&str, &str)> = headers.iter().map(|(n, _, t)| (n.as_str(), t.as_str())).collect();
    let compile_set = |units: &[Unit], label: &str, dir: PathBuf| -> Vec<PathBuf> {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mut files = Vec::with_capacity(units.len());
        for unit in units {
            let name = unit.path.file_name().and_then(|n| n.to_str()).expect("kernel file name");
            let start = Instant::now();
            let ptx = nvrtc
                .compile(name, &unit.text, &header_refs, &options)
                .unwrap_or_else(|log| panic!("NVRTC {version} failed to compile {label}/{name} for {arch}:\n{log}"));
            // Not a `cargo:` line: kept in the build script's output file for whoever wants the
            // timings and sizes (`cargo build -vv` shows it), invisible otherwise.
            println!("nvrtc {version}: {label}/{name} -> {} bytes of PTX in {:?}", ptx.len(), start.elapsed());
            let stem = unit.path.file_stem().and_then(|s| s.to_str()).expect("kernel file name");
            let file = dir.join(format!("{stem}.ptx"));
            std::fs::write(&file, ptx).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
            files.push(file);
        }
        files
    };
    let files = compile_set(product, "kernels", out.join("ptx"));
    compile_set(fixtures, "kernels/emu/fixtures", out.join("ptx").join("fixtures"));
    Some(Ptx { version, files })
}

/// `OUT_DIR/cuda_kernels.rs`: the `SOURCES`, `HEADERS`, `NVRTC_VERSION` and `ARCH` items that
/// `src/backend/cuda/ptx.rs` wraps. Everything is `include_str!` of an absolute path, so the
/// crate carries the exact text NVRTC saw.
fn cuda_kernels_rs(units: &[Unit], headers: &[(String, PathBuf, String)], arch: &str, ptx: Option<&Ptx>) -> String {
    // `{:?}` of a `str` is a valid Rust string literal (quotes and escapes included).
    let lit = |p: &Path| format!("{:?}", p.to_str().expect("non-UTF-8 path under kernels/ or OUT_DIR"));
    let mut s =
        String::from("// Generated by build.rs: kernels/*.cu for the CUDA backend (sources, headers, PTX).\n\n");
    s.push_str("static SOURCES: &[KernelSource] = &[\n");
    for (i, unit) in units.iter().enumerate() {
        let file = unit.path.file_name().and_then(|n| n.to_str()).expect("kernel file name");
        let names: Vec<String> = unit.kernels.iter().map(|k| format!("{k:?}")).collect();
        let ptx = match ptx {
            Some(p) => format!("Some(include_str!({}))", lit(&p.files[i])),
            None => "None".to_string(),
        };
        let _ = writeln!(
            s,
            "    KernelSource {{\n        file: {file:?},\n        source: include_str!({}),\n        \
             kernels: &[{}],\n        ptx: {ptx},\n    }},",
            lit(&unit.path),
            names.join(", ")
        );
    }
    s.push_str("];\n\nstatic HEADERS: &[(&str, &str)] = &[\n");
    for (name, path, _) in headers {
        let _ = writeln!(s, "    ({name:?}, include_str!({})),", lit(path));
    }
    s.push_str("];\n\n");
    let version = ptx.map_or("None".to_string(), |p| format!("Some({:?})", p.version));
    let _ = writeln!(s, "static NVRTC_VERSION: Option<&str> = {version};");
    let _ = writeln!(s, "static ARCH: &str = {arch:?};");
    s
}

// ---- NVRTC, loaded at build time -------------------------------------------------------------

/// `nvrtcResult`: 0 is success.
type NvrtcResult = i32;
/// `nvrtcProgram`: an opaque handle.
type NvrtcProgram = *mut std::ffi::c_void;

/// The NVRTC entry points the build uses, resolved from a library loaded at build time. NVRTC
/// is loaded rather than linked so that the crate builds on machines without CUDA, and so that
/// whichever NVRTC is found (12.x or 13.x, a toolkit or a pip wheel) can be used: this subset
/// of the C API is the same in both.
struct Nvrtc {
    version: unsafe extern "C" fn(*mut i32, *mut i32) -> NvrtcResult,
    create_program: unsafe extern "C" fn(
        *mut NvrtcProgram,
        *const std::ffi::c_char,
        *const std::ffi::c_char,
        i32,
        *const *const std::ffi::c_char,
        *const *const std::ffi::c_char,
    ) -> NvrtcResult,
    destroy_program: unsafe extern "C" fn(*mut NvrtcProgram) -> NvrtcResult,
    compile_program: unsafe extern "C" fn(NvrtcProgram, i32, *const *const std::ffi::c_char) -> NvrtcResult,
    get_ptx_size: unsafe extern "C" fn(NvrtcProgram, *mut usize) -> NvrtcResult,
    get_ptx: unsafe extern "C" fn(NvrtcProgram, *mut std::ffi::c_char) -> NvrtcResult,
    get_log_size: unsafe extern "C" fn(NvrtcProgram, *mut usize) -> NvrtcResult,
    get_log: unsafe extern "C" fn(NvrtcProgram, *mut std::ffi::c_char) -> NvrtcResult,
    get_error_string: unsafe extern "C" fn(NvrtcResult) -> *const std::ffi::c_char,
    /// Keeps the library mapped for as long as the function pointers above can be called.
    _lib: libloading::Library,
}

/// Library names accepted in a directory and, in the same order, tried as plain sonames. pip
/// wheels ship only the versioned name, toolkits also the unversioned one.
const NVRTC_NAMES: [&str; 3] = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"];

impl Nvrtc {
    /// The first NVRTC that loads, searching `$NVRTC_LIB_DIR`, `$CUDA_PATH/lib64`,
    /// `$CUDA_HOME/lib64`, `/usr/local/cuda/lib64`, then the plain sonames through the dynamic
    /// loader's default path (`LD_LIBRARY_PATH`, ld.so.cache). Python site-packages are not
    /// searched: which NVRTC makes the PTX should be a decision, not an accident of the
    /// environment. Also returns notes on candidates that exist but did not load.
    fn find() -> (Option<Nvrtc>, Vec<String>) {
        let mut notes = Vec::new();
        let mut dirs: Vec<(String, PathBuf)> = Vec::new();
        if let Some(d) = std::env::var_os("NVRTC_LIB_DIR").filter(|d| !d.is_empty()) {
            dirs.push(("NVRTC_LIB_DIR".into(), PathBuf::from(d)));
        }
        for var in ["CUDA_PATH", "CUDA_HOME"] {
            if let Some(d) = std::env::var_os(var).filter(|d| !d.is_empty()) {
                dirs.push((format!("{var}/lib64"), PathBuf::from(d).join("lib64")));
            }
        }
        dirs.push(("/usr/local/cuda/lib64".into(), PathBuf::from("/usr/local/cuda/lib64")));

        for (label, dir) in &dirs {
            let mut present = false;
            for name in NVRTC_NAMES {
                let path = dir.join(name);
                if !path.is_file() {
                    continue;
                }
                present = true;
                match Nvrtc::load(path.as_os_str()) {
                    Ok(n) => return (Some(n), notes),
                    Err(e) => notes.push(format!("{label}: {} did not load: {e}", path.display())),
                }
            }
            if !present && label == "NVRTC_LIB_DIR" {
                notes.push(format!("NVRTC_LIB_DIR={} holds none of {}", dir.display(), NVRTC_NAMES.join(", ")));
            }
        }
        for name in NVRTC_NAMES {
            // A bare soname (no slash) makes dlopen search the default path; a failure here is
            // the normal "not installed" case, not worth a note.
            if let Ok(n) = Nvrtc::load(std::ffi::OsStr::new(name)) {
                return (Some(n), notes);
            }
        }
        (None, notes)
    }

    /// Loads one library and resolves every entry point.
    fn load(path: &std::ffi::OsStr) -> Result<Nvrtc, libloading::Error> {
        // SAFETY: loading runs the library's initialisers; a libnvrtc is NVIDIA's compiler
        // library, whose initialisers have no preconditions on the loading process.
        let lib = unsafe { libloading::Library::new(path) }?;
        // SAFETY: each symbol is resolved with the signature of its declaration in NVIDIA's
        // nvrtc.h (identical in CUDA 12 and 13), and the pointers are stored next to `lib`,
        // which outlives every use of them (see `_lib`).
        unsafe {
            Ok(Nvrtc {
                version: *lib.get(b"nvrtcVersion\0")?,
                create_program: *lib.get(b"nvrtcCreateProgram\0")?,
                destroy_program: *lib.get(b"nvrtcDestroyProgram\0")?,
                compile_program: *lib.get(b"nvrtcCompileProgram\0")?,
                get_ptx_size: *lib.get(b"nvrtcGetPTXSize\0")?,
                get_ptx: *lib.get(b"nvrtcGetPTX\0")?,
                get_log_size: *lib.get(b"nvrtcGetProgramLogSize\0")?,
                get_log: *lib.get(b"nvrtcGetProgramLog\0")?,
                get_error_string: *lib.get(b"nvrtcGetErrorString\0")?,
                _lib: lib,
            })
        }
    }

    /// "major.minor", e.g. "12.8".
    fn version(&self) -> String {
        let (mut major, mut minor) = (0i32, 0i32);
        // SAFETY: nvrtcVersion writes two ints through valid pointers to locals.
        let r = unsafe { (self.version)(&mut major, &mut minor) };
        self.check(r, "nvrtcVersion");
        format!("{major}.{minor}")
    }

    /// Panics on an NVRTC API failure (not a compile error: those come back as the log).
    fn check(&self, r: NvrtcResult, what: &str) {
        if r != 0 {
            // SAFETY: nvrtcGetErrorString returns a pointer to a static NUL-terminated string
            // for any result value.
            let msg = unsafe { std::ffi::CStr::from_ptr((self.get_error_string)(r)) };
            panic!("{what} failed: {} ({r})", msg.to_string_lossy());
        }
    }

    /// Compiles one source to PTX. `headers` are (include name, text) pairs, resolved for
    /// `#include "name"` without touching the file system. Err is NVRTC's full program log.
    fn compile(
        &self,
        name: &str,
        source: &str,
        headers: &[(&str, &str)],
        options: &[String],
    ) -> Result<String, String> {
        let cstr = |s: &str| std::ffi::CString::new(s).expect("NUL byte in a kernel source, header or option");
        let c_source = cstr(source);
        let c_name = cstr(name);
        let c_header_texts: Vec<_> = headers.iter().map(|(_, t)| cstr(t)).collect();
        let c_header_names: Vec<_> = headers.iter().map(|(n, _)| cstr(n)).collect();
        let header_texts: Vec<_> = c_header_texts.iter().map(|c| c.as_ptr()).collect();
        let header_names: Vec<_> = c_header_names.iter().map(|c| c.as_ptr()).collect();
        let c_options: Vec<_> = options.iter().map(|o| cstr(o)).collect();
        let option_ptrs: Vec<_> = c_options.iter().map(|c| c.as_ptr()).collect();

        let mut prog: NvrtcProgram = std::ptr::null_mut();
        // SAFETY: every pointer is to a live NUL-terminated CString (kept alive by the vectors
        // above until the end of this function); the two header arrays have `headers.len()`
        // entries each. NVRTC copies what it needs.
        let r = unsafe {
            (self.create_program)(
                &mut prog,
                c_source.as_ptr(),
                c_name.as_ptr(),
                headers.len() as i32,
                header_texts.as_ptr(),
                header_names.as_ptr(),
            )
        };
        self.check(r, "nvrtcCreateProgram");
        // SAFETY: `prog` is the program just created; `option_ptrs` holds `options.len()` live
        // C strings.
        let compiled = unsafe { (self.compile_program)(prog, option_ptrs.len() as i32, option_ptrs.as_ptr()) };
        let result = if compiled == 0 {
            let mut size = 0usize;
            // SAFETY: `prog` compiled successfully; the size is written to a local.
            self.check(unsafe { (self.get_ptx_size)(prog, &mut size) }, "nvrtcGetPTXSize");
            let mut buf = vec![0u8; size];
            // SAFETY: `buf` has the `size` bytes NVRTC just asked for (terminating NUL included).
            self.check(unsafe { (self.get_ptx)(prog, buf.as_mut_ptr().cast()) }, "nvrtcGetPTX");
            Ok(c_buffer_to_string(buf))
        } else {
            let mut size = 0usize;
            // SAFETY: as above, for the program log, which exists whether or not it compiled.
            self.check(unsafe { (self.get_log_size)(prog, &mut size) }, "nvrtcGetProgramLogSize");
            let mut buf = vec![0u8; size];
            // SAFETY: `buf` has the `size` bytes NVRTC just asked for.
            self.check(unsafe { (self.get_log)(prog, buf.as_mut_ptr().cast()) }, "nvrtcGetProgramLog");
            // SAFETY: as for nvrtcGetErrorString in `check`.
            let what = unsafe { std::ffi::CStr::from_ptr((self.get_error_string)(compiled)) };
            Err(format!("{} ({compiled})\n{}", what.to_string_lossy(), c_buffer_to_string(buf)))
        };
        // SAFETY: `prog` was created above and is destroyed exactly once; nothing reads it after.
        self.check(unsafe { (self.destroy_program)(&mut prog) }, "nvrtcDestroyProgram");
        result
    }
}

/// Text from a buffer NVRTC filled with a NUL-terminated string.
fn c_buffer_to_string(mut buf: Vec<u8>) -> String {
    if let Some(end) = buf.iter().position(|&b| b == 0) {
        buf.truncate(end);
    }
    String::from_utf8_lossy(&buf).into_owned()
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
            "cargo:warning=no working host C++ compiler: kernels/*.cu and kernels/emu/fixtures/*.cu are not compiled \
             for emulation, the emulated-kernel tests will fail"
        );
        return false;
    }
    if let Err(e) = build.try_compile("gepa_emu_kernels") {
        panic!("compiling kernels/*.cu and kernels/emu/fixtures/*.cu for host emulation failed: {e}");
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
    let mut s = String::from("// Generated by build.rs: the emulated kernels (kernels/*.cu, then kernels/emu/fixtures/*.cu, compiled for the host).\n");
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
