//! The `dapo` command line: argument parsing and the subcommands.

/// `println!` for a command's output on stdout, inside a function returning `Result`: a reader
/// that closed the pipe early (`dapo selftest | head`) ends the command quietly with success,
/// where `println!` would panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

mod bench;
mod device;
mod eval;
mod generate;
mod model_arg;
mod plot;
mod progress;
mod selftest;
mod sft;
mod signals;
mod train;

use clap::{Parser, Subcommand};
use std::io::Write;

use crate::error::{Error, Result};

/// Writes command output to stdout; a closed pipe is [`Error::BrokenPipe`] (see `outln!`).
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) -> Result<()> {
    match std::io::stdout().lock().write_fmt(args) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Error::BrokenPipe),
        r => r.map_err(|e| Error::io("<stdout>", e)),
    }
}

/// Reinforcement-learning (DAPO / GRPO) and supervised fine-tuning of GPT-2-class models.
#[derive(Parser, Debug)]
#[command(name = "dapo", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// DAPO / GRPO reinforcement learning on a task file (or, with no arguments, the built-in
    /// addition task: a tiny GPT-2, a short SFT warm start, then RL).
    // Boxed: its many optional flags make it twice the size of the other variants.
    Train(Box<train::TrainArgs>),
    /// Supervised fine-tuning on a JSONL or text file (or a built-in arithmetic task).
    Sft(sft::SftArgs),
    /// Time GPT-2 training, decoding and one RL step (CPU, GPU or emulator), and the fused
    /// kernels on a GPU / the emulator.
    Bench(bench::BenchArgs),
    /// Sample completions from a local checkpoint; prints one JSON line per completion.
    Generate(generate::GenerateArgs),
    /// Greedy accuracy of a local checkpoint on a task file (math scorer or an external one).
    Eval(eval::EvalArgs),
    /// Compare every device kernel with the CPU oracle (GPU, or the emulator) and print a table.
    Selftest(selftest::SelftestArgs),
    /// Chart training logs (dapo_log.jsonl) as PNG and SVG: a page per run and, for several
    /// logs, a page comparing them.
    Plot(plot::PlotArgs),
}

/// Parses the process arguments, runs the command and returns the exit code: 0 on success,
/// 1 when the command fails (the error is printed), 2 for usage errors (clap's convention),
/// 130 (SIGINT) or 143 (SIGTERM) when a run was interrupted after saving a checkpoint.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train::run(*a),
        Command::Sft(a) => sft::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Selftest(a) => selftest::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Plot(a) => plot::run(a),
    };
    match result {
        // The reader has what it wanted (`| head`): not a failure.
        Ok(()) | Err(Error::BrokenPipe) => 0,
        Err(crate::error::Error::Interrupted { msg, code }) => {
            eprintln!("{msg}");
            code
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
