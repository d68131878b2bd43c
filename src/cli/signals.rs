//! SIGINT and SIGTERM during `dapo train`: the first asks the run to finish its step, write a
//! checkpoint and exit (130 for SIGINT, 143 for SIGTERM, the shell's 128 + signal); a second
//! one exits at once with that code. A terminal's Ctrl-C reaches only dapo: external scorers
//! run in their own process group (see `reward::external`), so they keep working until dapo
//! stops them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// The signals a run has received.
#[derive(Clone)]
pub struct Interrupt {
    /// Set by the first SIGINT or SIGTERM: finish the step, checkpoint, return.
    pub stop: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Installs the handlers. Where they cannot be installed, the signals keep their default
    /// meaning and `stop` never becomes true.
    pub fn install() -> Self {
        let (stop, signal) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        for sig in [SIGINT, SIGTERM] {
            // Registration order matters: the shutdown checks the flag before it is set, so
            // only a second signal exits at once.
            let _ = flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&stop));
            let _ = flag::register_usize(sig, Arc::clone(&signal), sig as usize);
            let _ = flag::register(sig, Arc::clone(&stop));
        }
        Interrupt { stop, signal }
    }

    /// Whether a signal asked the run to stop.
    pub fn requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The exit code for the signal received: 128 + its number (130 for SIGINT, 143 for
    /// SIGTERM).
    pub fn exit_code(&self) -> i32 {
        match self.signal.load(Ordering::SeqCst) {
            0 => 130,
            s => 128 + s as i32,
        }
    }

    /// The signal's name, for messages.
    pub fn name(&self) -> &'static str {
        match self.signal.load(Ordering::SeqCst) as i32 {
            SIGTERM => "SIGTERM",
            _ => "SIGINT",
        }
    }
}
