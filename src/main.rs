//! `dapo`: the command-line trainer. See `dapo --help`.

fn main() {
    std::process::exit(gepa_dapo_grn::cli::main());
}
