//! Every embedded kernel assembled by NVIDIA's `ptxas` for sm_90 (H100/H200), the way the driver
//! will assemble the PTX at load time: no kernel may spill registers or use a stack frame or
//! local memory, and the "Resources on sm_90" table in `kernels/README.md` must be what ptxas
//! reports now. The parsing and the occupancy model are `backend::cuda::resources`.
//!
//! ptxas is found through `$PTXAS`, then `PATH`, then the wheel `.ci/run` installs
//! (`target/nvcc-cu12`). Without it, or without embedded PTX (a build without NVRTC), the tests
//! skip with a note, unless `GEPA_REQUIRE_PTXAS=1` (set by `.ci/run`), which makes that a
//! failure. `GEPA_UPDATE_RESOURCES=1` rewrites the README table instead of comparing it.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use gepa_dapo_grn::backend::cuda::ptx;
use gepa_dapo_grn::backend::cuda::resources::{self, Ptxas, Report};

fn required() -> bool {
    std::env::var("GEPA_REQUIRE_PTXAS").is_ok_and(|v| v == "1")
}

/// The report of every embedded kernel, made once for all the tests; None (after a printed
/// note) when there is no ptxas or no PTX and `GEPA_REQUIRE_PTXAS` is not set.
fn report() -> Option<&'static Report> {
    static REPORT: OnceLock<Result<Report, String>> = OnceLock::new();
    let made = REPORT.get_or_init(|| {
        if ptx::nvrtc_version().is_none() {
            return Err("no PTX embedded: build.rs found no NVRTC (set NVRTC_LIB_DIR)".to_string());
        }
        let ptxas = Ptxas::find().map_err(|e| e.to_string())?;
        let start = std::time::Instant::now();
        let report = Report::make(&ptxas).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("ptxas {} at {}: {:.1} s", ptxas.version, ptxas.path.display(), start.elapsed().as_secs_f64());
        Ok(report)
    });
    match made {
        Ok(r) => Some(r),
        Err(why) => {
            assert!(!required(), "GEPA_REQUIRE_PTXAS=1 but {why}");
            eprintln!("skipped: {why}");
            None
        }
    }
}

#[test]
fn no_kernel_spills_or_uses_local_memory_on_sm_90() {
    let Some(report) = report() else { return };
    let embedded: usize = ptx::sources().iter().map(|s| s.kernels.len()).sum();
    assert_eq!(report.rows.len(), embedded, "one row per embedded kernel");
    for row in &report.rows {
        let k = &row.resources;
        assert!(k.registers > 0 && k.registers <= resources::SM90.max_registers_per_thread, "{}: {k:?}", k.name);
        assert!(row.occupancy.blocks > 0, "{} cannot launch with its typical block: {row:?}", k.name);
    }
    let problems = report.problems();
    assert!(problems.is_empty(), "kernels that spill or use local memory on sm_90:\n{}", problems.join("\n"));
}

#[test]
fn the_readme_table_is_current() {
    let Some(report) = report() else { return };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let committed = resources::readme_section(&readme).unwrap_or_else(|| {
        panic!("kernels/README.md lacks the lines {:?} ... {:?}", resources::README_BEGIN, resources::README_END)
    });
    let now = report.markdown();
    if committed == now {
        return;
    }
    if std::env::var("GEPA_UPDATE_RESOURCES").is_ok_and(|v| v == "1") {
        std::fs::write(&path, resources::replace_readme_section(&readme, &now).unwrap()).unwrap();
        eprintln!("kernels/README.md: resources table rewritten");
        return;
    }
    // The first line names ptxas's and NVRTC's versions: another toolchain may allocate
    // differently, which is not the README being stale.
    let (old_tools, new_tools) = (committed.lines().next(), now.lines().next());
    if old_tools != new_tools && !required() {
        eprintln!("skipped: the README's table is for another toolchain:\n  {old_tools:?}\n  here: {new_tools:?}");
        return;
    }
    panic!(
        "kernels/README.md's \"Resources on sm_90\" table is out of date. Rerun with \
         GEPA_UPDATE_RESOURCES=1 (or paste `dapo selftest --resources`' table); ptxas now says:\n{now}"
    );
}

#[test]
fn the_cli_prints_the_table_or_says_how_to_get_ptxas() {
    let dapo = || Command::new(env!("CARGO_BIN_EXE_dapo"));
    // An explicit PTXAS that does not exist: a clear error and exit code 1, not a panic.
    let out = dapo().args(["selftest", "--resources"]).env("PTXAS", "/nonexistent/ptxas").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for needle in ["PTXAS=/nonexistent/ptxas", "nvidia-cuda-nvcc-cu12", resources::WHEEL_PTXAS] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    // The parity options do not go with it.
    let out = dapo().args(["selftest", "--resources", "--device", "emu"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));

    let Some(report) = report() else { return };
    let mut cmd = dapo();
    if let Ok(p) = Ptxas::find() {
        cmd.env("PTXAS", &p.path);
    }
    let out = cmd.args(["selftest", "--resources"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("ptxas: "), "{stdout}");
    assert!(stdout.ends_with(&report.markdown()), "stdout:\n{stdout}\nwant the table:\n{}", report.markdown());
}
