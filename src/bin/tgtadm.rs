//! tgtadm: tgt-compatible management client (see `curve_tgt::mgmt::cli`).

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let code = curve_tgt::mgmt::cli::run(
        &argv,
        &mut curve_tgt::mgmt::cli::Io {
            out: &mut out,
            err: &mut err,
        },
    );
    std::process::exit(code);
}
