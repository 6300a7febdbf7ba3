//! Our `tgt-admin`: applies tgt's `/etc/tgt/targets.conf` to a running tgtd as tgt's Perl
//! tool does (the same tgtadm calls, in the same order, with the same `-p`/`-v` lines), with
//! the calls made through our tgtadm client in-process.
//!
//! Floors: `general` reads the file (Config::General's rules), `state` reads what tgtd has,
//! `admin` holds a run and executes calls, `add`/`lun`/`remove`/`report` are tgt-admin's
//! actions, `in_use` and `direct` ask the host about devices, `shell` splits a call into argv,
//! `options` is the command line.
//!
//! Where tgt's tool walks a Perl hash (all targets for `--dump`, `--delete ALL`,
//! `--offline ALL`, `--update ALL`, `-e`'s removals; a `<backing-store>` block's keys), its
//! order is unspecified; ours is by tid, and by key.

pub mod add;
pub mod admin;
pub mod direct;
pub mod general;
pub mod in_use;
pub mod lun;
pub mod options;
pub mod remove;
pub mod report;
pub mod shell;
pub mod state;
#[cfg(test)]
mod tests;

pub use admin::{Admin, Options, Stop, Tgtadm};

/// A whole tgt-admin run over `args` (without `argv[0]`); returns the exit status.
pub fn run(
    args: &[String],
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
    tgtadm: &mut dyn Tgtadm,
) -> i32 {
    let (o, warnings) = options::parse(args);
    for w in warnings {
        let _ = writeln!(err, "{w}");
    }
    if o.help || args.is_empty() {
        let _ = out.write_all(options::usage().as_bytes());
        return 0;
    }
    let mut a = Admin::new(o, out, err, tgtadm);
    match a.main() {
        Ok(()) => 0,
        Err(Stop(code)) => code,
    }
}
