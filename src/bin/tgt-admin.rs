//! tgt-admin: applies tgt's targets.conf to a running tgtd (see
//! `curve_tgt::mgmt::targets_conf`). tgtadm calls go through our tgtadm client in-process.

use curve_tgt::mgmt::cli;
use curve_tgt::mgmt::targets_conf::{self, Tgtadm};
use std::io::Write;

/// Our tgtadm, called as a library: output to our stdout/stderr, or stdout captured.
struct InProcess;

impl Tgtadm for InProcess {
    fn run(&mut self, argv: &[String]) -> i32 {
        let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
        let code = cli::run(
            argv,
            &mut cli::Io {
                out: &mut out,
                err: &mut err,
            },
        );
        let _ = out.flush();
        code
    }

    fn capture(&mut self, argv: &[String]) -> String {
        let (mut out, mut err) = (Vec::new(), std::io::stderr());
        cli::run(
            argv,
            &mut cli::Io {
                out: &mut out,
                err: &mut err,
            },
        );
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let code = targets_conf::run(&args, &mut out, &mut err, &mut InProcess);
    let _ = out.flush();
    std::process::exit(code);
}
