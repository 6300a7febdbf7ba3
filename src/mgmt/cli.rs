//! The `tgtadm` command line, compatible with tgt 1.0.85's: the same options (GNU
//! `getopt_long` rules: permutation, `--opt=value`, unique long-option prefixes, and tgt's
//! quirk that `-F` and `-O` take an argument while `--force`/`--outgoing` do not), the same
//! client-side mode/op checks and messages, the same payload item order, and the same exit
//! codes (22 for errors, errno values for transport failures).

use super::cnum::strtoull;
use super::ipc::{
    Mode, Op, ReqHeader, Request, RspHeader, TgtadmError, ACCOUNT_OUTGOING, GLOBAL_TID, RSP_HDR_LEN,
};
use super::server::{socket_base_from_env, socket_path};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The tgt version this tgtadm is compatible with (`tgtadm -V`).
pub const TGT_VERSION: &str = "1.0.85";
/// This product's version (`tgtadm --help`, `tgtd --version`).
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");
/// EINVAL: tgtadm's exit status for every usage or request error.
const EINVAL: i32 = 22;
/// How long to wait for tgtd to close its socket after `sys delete`.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// tgt's `short_options`: every short option except d, h, V takes an argument.
const SHORT_WITH_ARG: &str = "LomtsclnvbEfyTIQupHFPBYOCS";

/// tgt's `long_options`, in its order (getopt lists ambiguity candidates in this order).
const LONG: &[(&str, bool, char)] = &[
    ("debug", false, 'd'),
    ("help", false, 'h'),
    ("version", false, 'V'),
    ("lld", true, 'L'),
    ("op", true, 'o'),
    ("mode", true, 'm'),
    ("tid", true, 't'),
    ("sid", true, 's'),
    ("cid", true, 'c'),
    ("lun", true, 'l'),
    ("name", true, 'n'),
    ("value", true, 'v'),
    ("backing-store", true, 'b'),
    ("bstype", true, 'E'),
    ("bsopts", true, 'S'),
    ("bsoflags", true, 'f'),
    ("blocksize", true, 'y'),
    ("targetname", true, 'T'),
    ("initiator-address", true, 'I'),
    ("initiator-name", true, 'Q'),
    ("user", true, 'u'),
    ("password", true, 'p'),
    ("host", true, 'H'),
    ("force", false, 'F'),
    ("params", true, 'P'),
    ("bus", true, 'B'),
    ("device-type", true, 'Y'),
    ("outgoing", false, 'O'),
    ("control-port", true, 'C'),
];

/// Where a tgtadm run writes.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

/// Ends the run with this exit status (after its messages were written).
#[derive(Debug, PartialEq, Eq)]
struct Exit(i32);

/// One option occurrence from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Opt {
    ch: char,
    arg: Option<String>,
}

/// GNU getopt_long over `args[1..]`: options in order, non-options collected apart.
struct Getopt<'a> {
    prog: &'a str,
    args: &'a [String],
    i: usize,
    /// Remaining characters of a short-option cluster.
    cluster: Vec<char>,
    rest: Vec<String>,
}

impl<'a> Getopt<'a> {
    fn new(args: &'a [String]) -> Getopt<'a> {
        Getopt {
            prog: args.first().map_or("tgtadm", String::as_str),
            args,
            i: 1,
            cluster: Vec::new(),
            rest: Vec::new(),
        }
    }

    fn take_next(&mut self) -> Option<String> {
        let a = self.args.get(self.i).cloned();
        if a.is_some() {
            self.i += 1;
        }
        a
    }

    /// The next option, or `Err(message)` for what glibc's getopt prints before returning '?'.
    fn next_opt(&mut self) -> Option<Result<Opt, String>> {
        if !self.cluster.is_empty() {
            let ch = self.cluster.remove(0);
            return Some(self.short(ch));
        }
        loop {
            let a = self.take_next()?;
            if a == "--" {
                while let Some(r) = self.take_next() {
                    self.rest.push(r);
                }
                return None;
            }
            if let Some(long) = a.strip_prefix("--") {
                return Some(self.long(long));
            }
            if a.len() > 1 && a.starts_with('-') {
                self.cluster = a.chars().skip(1).collect();
                let ch = self.cluster.remove(0);
                return Some(self.short(ch));
            }
            self.rest.push(a);
        }
    }

    fn short(&mut self, ch: char) -> Result<Opt, String> {
        if SHORT_WITH_ARG.contains(ch) {
            let arg = if self.cluster.is_empty() {
                self.take_next()
            } else {
                Some(std::mem::take(&mut self.cluster).into_iter().collect())
            };
            return match arg {
                Some(a) => Ok(Opt { ch, arg: Some(a) }),
                None => Err(format!(
                    "{}: option requires an argument -- '{ch}'\n",
                    self.prog
                )),
            };
        }
        if "dhV".contains(ch) {
            return Ok(Opt { ch, arg: None });
        }
        Err(format!("{}: invalid option -- '{ch}'\n", self.prog))
    }

    fn long(&mut self, body: &str) -> Result<Opt, String> {
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let exact = LONG.iter().find(|(n, _, _)| *n == name);
        let cands: Vec<_> = LONG
            .iter()
            .filter(|(n, _, _)| n.starts_with(name))
            .collect();
        let (lname, has_arg, ch) = match (exact, cands.as_slice()) {
            (Some(e), _) => *e,
            (None, [one]) => **one,
            (None, []) => {
                return Err(format!("{}: unrecognized option '--{name}'\n", self.prog));
            }
            (None, many) => {
                let list: Vec<String> = many.iter().map(|(n, _, _)| format!("'--{n}'")).collect();
                return Err(format!(
                    "{}: option '--{name}' is ambiguous; possibilities: {}\n",
                    self.prog,
                    list.join(" ")
                ));
            }
        };
        if !has_arg {
            if inline.is_some() {
                return Err(format!(
                    "{}: option '--{lname}' doesn't allow an argument\n",
                    self.prog
                ));
            }
            return Ok(Opt { ch, arg: None });
        }
        match inline.or_else(|| self.take_next()) {
            Some(a) => Ok(Opt { ch, arg: Some(a) }),
            None => Err(format!(
                "{}: option '--{lname}' requires an argument\n",
                self.prog
            )),
        }
    }
}

/// Everything tgtadm collects from its options.
#[derive(Debug)]
struct Args {
    op: Option<(Op, String)>,
    mode: Option<Mode>,
    lld: String,
    tid: i64,
    sid: u64,
    cid: u32,
    lun: u64,
    host_no: u32,
    dev_type: u32,
    outgoing: bool,
    force: bool,
    control_port: u16,
    name: Option<String>,
    value: Option<String>,
    path: Option<String>,
    bstype: Option<String>,
    bsopts: Option<String>,
    bsoflags: Option<String>,
    blocksize: Option<String>,
    targetname: Option<String>,
    address: Option<String>,
    iqnname: Option<String>,
    user: Option<String>,
    password: Option<String>,
    target_ops: Option<String>,
    portal_ops: Option<String>,
}

fn usage_error(io: &mut Io<'_>) -> Exit {
    let _ = writeln!(io.err, "Try `tgtadm --help' for more information.");
    Exit(EINVAL)
}

fn fail(io: &mut Io<'_>, msg: &str, code: i32) -> Exit {
    let _ = writeln!(io.err, "tgtadm: {msg}");
    Exit(code)
}

/// tgt's `str_to_int` into a type of `bits` width (signed or not), then the `>= 0` check
/// where tgt uses `str_to_int_ge`.
fn parse_num(
    io: &mut Io<'_>,
    ch: char,
    s: &str,
    signed_bits: Option<u32>,
    unsigned_bits: u32,
) -> Result<u64, Exit> {
    let (v, used) = strtoull(s);
    let bad = |io: &mut Io<'_>, what: &str| {
        let _ = writeln!(io.err, "-{ch} argument value '{s}' {what}");
        usage_error(io)
    };
    if v == u64::MAX || used == 0 {
        return Err(bad(io, "invalid"));
    }
    let fits = match signed_bits {
        // (int)v compared back with v: only values 0..=INT_MAX round-trip; the >= 0 check
        // rejects the rest anyway.
        Some(b) => v < (1u64 << (b - 1)),
        None => unsigned_bits == 64 || v < (1u64 << unsigned_bits),
    };
    if !fits {
        return Err(bad(io, "out of range"));
    }
    Ok(v)
}

fn device_type(io: &mut Io<'_>, s: &str) -> Result<u32, Exit> {
    Ok(match s {
        "disk" => 0,
        "tape" | "ssc" => 1,
        "cd" => 5,
        "changer" => 8,
        "osd" => 0x11,
        "pt" => 0xff,
        _ => return Err(fail(io, &format!("unknown target type: {s}"), EINVAL)),
    })
}

fn parse_mode(io: &mut Io<'_>, s: &str) -> Result<Mode, Exit> {
    Ok(match s {
        "system" | "sys" => Mode::System,
        "target" | "tgt" => Mode::Target,
        "logicalunit" | "lu" => Mode::Device,
        "portal" | "pt" => Mode::Portal,
        "session" | "sess" => Mode::Session,
        "connection" | "conn" => Mode::Connection,
        "account" => Mode::Account,
        "lld" => Mode::Lld,
        _ => return Err(fail(io, &format!("unknown mode: {s}"), 1)),
    })
}

fn parse_op(io: &mut Io<'_>, s: &str) -> Result<Op, Exit> {
    Ok(match s {
        "new" => Op::New,
        "delete" => Op::Delete,
        "bind" => Op::Bind,
        "unbind" => Op::Unbind,
        "show" => Op::Show,
        "update" => Op::Update,
        "stat" => Op::Stats,
        "start" => Op::Start,
        "stop" => Op::Stop,
        _ => return Err(fail(io, &format!("unknown operation: {s}"), 1)),
    })
}

/// `-B bus,device`: the SCSI host number from sysfs.
fn bus_to_host(io: &mut Io<'_>, s: &str) -> Result<u32, Exit> {
    let Some((bus, dev)) = s.split_once(',') else {
        return Ok((-libc::EINVAL) as u32);
    };
    let dir = format!("/sys/bus/{bus}/devices/{dev}");
    let host = std::fs::read_dir(&dir).ok().and_then(|d| {
        d.flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_prefix("host").map(|h| strtoull(h).0)
            })
            .last()
    });
    match host {
        Some(h) => Ok(h as u32),
        None => Err(fail(io, &format!("can't find bus: {bus}"), EINVAL)),
    }
}

fn parse_args(argv: &[String], io: &mut Io<'_>) -> Result<(Args, Vec<Opt>), Exit> {
    let mut a = Args {
        op: None,
        mode: None,
        lld: String::new(),
        tid: -1,
        sid: 0,
        cid: 0,
        lun: u64::MAX,
        host_no: 0,
        dev_type: 0,
        outgoing: false,
        force: false,
        control_port: 0,
        name: None,
        value: None,
        path: None,
        bstype: None,
        bsopts: None,
        bsoflags: None,
        blocksize: None,
        targetname: None,
        address: None,
        iqnname: None,
        user: None,
        password: None,
        target_ops: None,
        portal_ops: None,
    };
    let mut g = Getopt::new(argv);
    let mut seen = Vec::new();
    while let Some(r) = g.next_opt() {
        let o = match r {
            Ok(o) => o,
            Err(msg) => {
                let _ = io.err.write_all(msg.as_bytes());
                return Err(usage_error(io));
            }
        };
        let arg = o.arg.clone().unwrap_or_default();
        match o.ch {
            'L' => a.lld = arg,
            'o' => a.op = Some((parse_op(io, &arg)?, arg)),
            'm' => a.mode = Some(parse_mode(io, &arg)?),
            't' => a.tid = parse_num(io, 't', &arg, Some(32), 32)? as i64,
            's' => a.sid = parse_num(io, 's', &arg, None, 64)?,
            'c' => a.cid = parse_num(io, 'c', &arg, None, 32)? as u32,
            'l' => a.lun = parse_num(io, 'l', &arg, None, 64)?,
            'P' if a.mode == Some(Mode::Portal) => a.portal_ops = Some(arg),
            'P' => a.target_ops = Some(arg),
            'n' => a.name = Some(arg),
            'v' => a.value = Some(arg),
            'b' => a.path = Some(arg),
            'T' => a.targetname = Some(arg),
            'I' => a.address = Some(arg),
            'Q' => a.iqnname = Some(arg),
            'u' => a.user = Some(arg),
            'p' => a.password = Some(arg),
            'B' => a.host_no = bus_to_host(io, &arg)?,
            'H' => a.host_no = parse_num(io, 'H', &arg, Some(32), 32)? as u32,
            'F' => a.force = true,
            'f' => a.bsoflags = Some(arg),
            'y' => a.blocksize = Some(arg),
            'E' => a.bstype = Some(arg),
            'S' => a.bsopts = Some(arg),
            'Y' => a.dev_type = device_type(io, &arg)?,
            'O' => a.outgoing = true,
            'C' => a.control_port = parse_num(io, 'C', &arg, Some(16), 16)? as u16,
            'V' => {
                let _ = writeln!(io.out, "{TGT_VERSION}");
                return Err(Exit(0));
            }
            'h' => {
                let _ = io.out.write_all(usage_text().as_bytes());
                return Err(Exit(0));
            }
            _ => {}
        }
        seen.push(o);
    }
    if let Some(extra) = g.rest.first() {
        let _ = writeln!(io.err, "tgtadm: unrecognized option '{extra}'");
        return Err(usage_error(io));
    }
    Ok((a, seen))
}

/// tgt's `verify_mode_params`: the first option not in `allowed` (`-d` is always allowed).
fn disallowed(seen: &[Opt], allowed: &str) -> Option<char> {
    seen.iter()
        .map(|o| o.ch)
        .find(|c| !allowed.contains(*c) && *c != 'd')
}

/// The client-side mode/op checks of tgtadm's `main`, with its messages.
fn validate(a: &mut Args, seen: &[Opt], io: &mut Io<'_>) -> Result<(Mode, Op), Exit> {
    let Some((op, op_name)) = a.op.clone() else {
        return Err(fail(io, "specify the operation type", EINVAL));
    };
    let Some(mode) = a.mode else {
        return Err(fail(io, "specify the mode", EINVAL));
    };
    let check = |io: &mut Io<'_>, allowed: &str, prefix: &str, suffix: &str| match disallowed(
        seen, allowed,
    ) {
        Some(c) => Err(fail(io, &format!("{prefix}'-{c}'{suffix}"), EINVAL)),
        None => Ok(()),
    };
    let not_allowed = " is not allowed/supported";
    match mode {
        Mode::System => match op {
            Op::Update => {
                check(io, "LmonvC", "system mode: option ", not_allowed)?;
                if a.name.is_none() || a.value.is_none() {
                    return Err(fail(
                        io,
                        "update operation requires 'name' and 'value' options",
                        EINVAL,
                    ));
                }
            }
            Op::Show | Op::Delete | Op::Stats => {}
            _ => {
                return Err(fail(
                    io,
                    &format!("operation {op_name} not supported in system mode"),
                    EINVAL,
                ))
            }
        },
        Mode::Target => {
            if a.tid <= 0 && op != Op::Show {
                let msg = if a.tid == 0 {
                    "'tid' cannot be 0"
                } else {
                    "'tid' option is necessary"
                };
                return Err(fail(io, msg, EINVAL));
            }
            let p = "target mode: option ";
            match op {
                Op::New => {
                    check(io, "LmotTC", p, not_allowed)?;
                    if a.targetname.is_none() {
                        return Err(fail(
                            io,
                            "creating new target requires a name, use --targetname",
                            EINVAL,
                        ));
                    }
                }
                Op::Delete => check(io, "LmotCF", p, not_allowed)?,
                Op::Show | Op::Stats => check(io, "LmotC", p, not_allowed)?,
                Op::Bind | Op::Unbind => {
                    check(io, "LmotIQBHC", p, not_allowed)?;
                    if a.address.is_none() && a.iqnname.is_none() && a.host_no == 0 {
                        return Err(fail(
                            io,
                            &format!(
                                "{op_name} operation requires initiator-address, initiator-nameor bus"
                            ),
                            EINVAL,
                        ));
                    }
                }
                Op::Update => {
                    check(io, "LmotnvC", p, not_allowed)?;
                    if a.name.is_none() || a.value.is_none() {
                        return Err(fail(
                            io,
                            "update operation requires 'name' and 'value' options",
                            EINVAL,
                        ));
                    }
                }
                _ => {
                    return Err(fail(
                        io,
                        &format!("operation {op_name} not supported in target mode"),
                        EINVAL,
                    ))
                }
            }
        }
        Mode::Account => {
            let p = "account mode: option ";
            match op {
                Op::New => {
                    check(io, "LmoupfC", p, " is not allowed/supported")?;
                    if a.user.is_none() || a.password.is_none() {
                        return Err(fail(
                            io,
                            "'user' and 'password' options are required",
                            EINVAL,
                        ));
                    }
                }
                Op::Show => check(io, "LmoC", p, not_allowed)?,
                Op::Delete => check(io, "LmouC", p, not_allowed)?,
                Op::Bind | Op::Unbind => {
                    check(io, "LmotuOC", p, not_allowed)?;
                    if a.user.is_none() {
                        return Err(fail(io, "'user' option is necessary", EINVAL));
                    }
                    if a.tid == -1 {
                        a.tid = i64::from(GLOBAL_TID);
                    }
                }
                _ => {
                    return Err(fail(
                        io,
                        &format!("operation {op_name} not supported in account mode"),
                        EINVAL,
                    ))
                }
            }
        }
        Mode::Device => {
            if a.tid <= 0 {
                let msg = if a.tid == 0 {
                    "'tid' must not be 0"
                } else {
                    "'tid' option is necessary"
                };
                return Err(fail(io, msg, EINVAL));
            }
            if a.lun == u64::MAX {
                return Err(fail(io, "'lun' option is necessary", EINVAL));
            }
            let p = "logicalunit mode: option ";
            match op {
                Op::New => {
                    check(io, "LmofytlbEYCS", p, not_allowed)?;
                    if a.path.is_none() && ![5, 1, 0].contains(&a.dev_type) {
                        return Err(fail(io, "'backing-store' option is necessary", EINVAL));
                    }
                }
                Op::Delete | Op::Stats => check(io, "LmotlC", p, not_allowed)?,
                Op::Update => check(
                    io,
                    "LmofytlPC",
                    "option ",
                    " not supported in logicalunit mode",
                )?,
                _ => {
                    return Err(fail(
                        io,
                        &format!("operation {op_name} not supported in logicalunit mode"),
                        EINVAL,
                    ))
                }
            }
        }
        Mode::Portal => match op {
            Op::New | Op::Delete => {
                check(io, "LmoCP", "portal mode: option ", not_allowed)?;
                if a.portal_ops.is_none() {
                    return Err(fail(io, "you must specify --param portal=<portal>", EINVAL));
                }
            }
            Op::Show => check(io, "LmoC", "option ", " not supported in portal mode")?,
            _ => {
                return Err(fail(
                    io,
                    &format!("operation {op_name} not supported in portal mode"),
                    EINVAL,
                ))
            }
        },
        Mode::Lld => match op {
            Op::Start | Op::Stop | Op::Show => check(io, "LmoC", "lld mode: option ", not_allowed)?,
            _ => {
                return Err(fail(
                    io,
                    &format!("option {} not supported in lld mode", op as u32),
                    EINVAL,
                ))
            }
        },
        Mode::Session | Mode::Connection => {}
    }
    Ok((mode, op))
}

/// The payload in tgt's item order (curve-tgt.md §4.2).
fn payload(a: &Args) -> String {
    let mut items: Vec<String> = Vec::new();
    if let Some(n) = &a.name {
        items.push(format!("{n}={}", a.value.as_deref().unwrap_or("(null)")));
    }
    let mut kv = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            items.push(format!("{k}={v}"));
        }
    };
    kv("path", &a.path);
    if a.dev_type == 1 {
        kv("bstype", &Some("ssc".into()));
    } else {
        kv("bstype", &a.bstype);
    }
    kv("bsopts", &a.bsopts);
    kv("bsoflags", &a.bsoflags);
    kv("blocksize", &a.blocksize);
    kv("targetname", &a.targetname);
    kv("initiator-address", &a.address);
    kv("initiator-name", &a.iqnname);
    kv("user", &a.user);
    kv("password", &a.password);
    if let Some(t) = &a.target_ops {
        items.push(format!("targetOps {t},"));
    }
    if let Some(p) = &a.portal_ops {
        items.push(format!("portalOps {p},"));
    }
    items.join(",")
}

/// Builds the request tgtadm would send for `argv`, or the exit it would take first.
fn build_request(argv: &[String], io: &mut Io<'_>) -> Result<(Request, u16), Exit> {
    let (mut a, seen) = parse_args(argv, io)?;
    let (mode, op) = validate(&mut a, &seen, io)?;
    let mut hdr = ReqHeader::new(mode, op);
    hdr.lld = a.lld.clone();
    hdr.tid = a.tid as i32;
    hdr.sid = a.sid;
    hdr.cid = a.cid;
    hdr.lun = a.lun;
    hdr.host_no = a.host_no;
    hdr.device_type = a.dev_type;
    hdr.ac_dir = if a.outgoing { ACCOUNT_OUTGOING } else { 0 };
    hdr.force = u32::from(a.force);
    Ok((
        Request {
            hdr,
            payload: payload(&a),
        },
        a.control_port,
    ))
}

/// Runs tgtadm with `argv` (`argv[0]` is the program name) and returns its exit status.
pub fn run(argv: &[String], io: &mut Io<'_>) -> i32 {
    let (req, port) = match build_request(argv, io) {
        Ok(r) => r,
        Err(Exit(code)) => return code,
    };
    let path = socket_path(&socket_base_from_env(), port);
    match exchange(&path, &req, io) {
        Ok(code) | Err(Exit(code)) => code,
    }
}

fn connect(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(path)
}

fn exchange(path: &Path, req: &Request, io: &mut Io<'_>) -> Result<i32, Exit> {
    if path.as_os_str().len() > 107 {
        let _ = writeln!(
            io.err,
            "tgtadm: management path too long: {}",
            path.display()
        );
    }
    let Ok(mut s) = connect(path) else {
        // tgtadm ignores the connect error and then fails to write on the unconnected socket.
        return Err(fail(
            io,
            "failed to send request hdr to tgt daemon, Transport endpoint is not connected",
            libc::ENOTCONN,
        ));
    };
    if let Err(e) = s.write_all(&req.encode()) {
        let code = e.raw_os_error().unwrap_or(libc::EIO);
        return Err(fail(
            io,
            &format!("failed to send request hdr to tgt daemon, {}", strerror(&e)),
            code,
        ));
    }
    let mut hdr = [0u8; RSP_HDR_LEN];
    let got = read_some(&mut s, &mut hdr);
    match got {
        Err(e) => {
            let code = e.raw_os_error().unwrap_or(libc::EIO);
            return Err(fail(
                io,
                &format!("can't get the response, {}", strerror(&e)),
                code,
            ));
        }
        Ok(0) => return Err(fail(io, "tgtd closed the socket", 0)),
        Ok(n) if n < RSP_HDR_LEN => return Err(fail(io, "a partial response", 0)),
        Ok(_) => {}
    }
    let rsp = RspHeader::parse(hdr);
    if rsp.err != 0 {
        return Err(fail(io, &TgtadmError::message_for(rsp.err), EINVAL));
    }
    if Mode::from_wire(req.hdr.mode) == Some(Mode::System)
        && Op::from_wire(req.hdr.op) == Some(Op::Delete)
    {
        wait_for_shutdown(path);
    }
    let len = (rsp.len as usize).saturating_sub(RSP_HDR_LEN);
    if len == 0 {
        return Ok(0);
    }
    let mut body = vec![0u8; len.min(64 << 20)];
    if read_some(&mut s, &mut body).ok() == Some(body.len()) {
        let end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
        let _ = io.out.write_all(&body[..end]);
    }
    Ok(0)
}

/// Reads until `buf` is full or EOF (MSG_WAITALL), returning how much arrived.
fn read_some(s: &mut UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match s.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// After `sys delete`, tgtadm polls every 100 ms until connecting is refused; bounded here.
fn wait_for_shutdown(path: &Path) {
    let start = Instant::now();
    while start.elapsed() < SHUTDOWN_WAIT {
        match connect(path) {
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => return,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The C `%m` text of an error (without Rust's " (os error N)" suffix).
fn strerror(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// tgtadm's `--help` text.
pub fn usage_text() -> String {
    format!(
        "curve-tgt {PRODUCT_VERSION}: Linux SCSI Target administration utility, compatible with tgt {TGT_VERSION}\n\n\
Usage: tgtadm [OPTION]\n\
--lld <driver> --mode target --op new --tid <id> --targetname <name>\n\
\tadd a new target with <id> and <name>. <id> must not be zero.\n\
--lld <driver> --mode target --op delete [--force] --tid <id>\n\
\tdelete the specific target with <id>.\n\
\tWith force option, the specific target is deleted\n\
\teven if there is an activity.\n\
--lld <driver> --mode target --op show\n\
\tshow all the targets.\n\
--lld <driver> --mode target --op show --tid <id>\n\
\tshow the specific target's parameters.\n\
--lld <driver> --mode target --op update --tid <id> --name <param> --value <value>\n\
\tchange the target parameters of the target with <id>.\n\
--lld <driver> --mode target --op bind --tid <id> --initiator-address <address>\n\
--lld <driver> --mode target --op bind --tid <id> --initiator-name <name>\n\
\tenable the target to accept the specific initiators.\n\
--lld <driver> --mode target --op unbind --tid <id> --initiator-address <address>\n\
--lld <driver> --mode target --op unbind --tid <id> --initiator-name <name>\n\
\tdisable the specific permitted initiators.\n\
--lld <driver> --mode logicalunit --op new --tid <id> --lun <lun>\n\
\x20\x20--backing-store <path> --bstype <type> --bsopts <bs options> --bsoflags <options>\n\
\tadd a new logical unit with <lun> to the specific\n\
\ttarget with <id>. The logical unit is offered\n\
\tto the initiators. <path> must be block device files\n\
\t(including LVM and RAID devices) or regular files.\n\
\tbstype option is optional.\n\
\tbsopts are specific to the bstype.\n\
\tbsoflags supported options are sync and direct\n\
\t(sync:direct for both).\n\
--lld <driver> --mode logicalunit --op delete --tid <id> --lun <lun>\n\
\tdelete the specific logical unit with <lun> that\n\
\tthe target with <id> has.\n\
--lld <driver> --mode account --op new --user <name> --password <pass>\n\
\tadd a new account with <name> and <pass>.\n\
--lld <driver> --mode account --op delete --user <name>\n\
\tdelete the specific account having <name>.\n\
--lld <driver> --mode account --op bind --tid <id> --user <name> [--outgoing]\n\
\tadd the specific account having <name> to\n\
\tthe specific target with <id>.\n\
\t<user> could be <IncomingUser> or <OutgoingUser>.\n\
\tIf you use --outgoing option, the account will\n\
\tbe added as an outgoing account.\n\
--lld <driver> --mode account --op unbind --tid <id> --user <name> [--outgoing]\n\
\tdelete the specific account having <name> from specific\n\
\ttarget. The --outgoing option must be added if you\n\
\tdelete an outgoing account.\n\
--lld <driver> --mode lld --op start\n\
\tStart the specified lld without restarting the tgtd process.\n\
--lld <driver> --mode lld --op stop\n\
\tStop the specified lld (refused while it has targets).\n\
--lld <driver> --mode lld --op show\n\
\tshow the llds, their state and their targets.\n\
--lld <driver> --mode target --op stat --tid <id>\n\
\tshow the I/O statistics of the target with <id>.\n\
--lld <driver> --mode logicalunit --op update --tid <id> --lun <lun> --params <key=value,...>\n\
\tchange the parameters of the logical unit: scsi_id, scsi_sn,\n\
\tvendor_id, product_id, product_rev, sense_format, lbppbe, la_lba,\n\
\toptimal_xfer_gran, optimal_xfer_len, removable, readonly, online,\n\
\tthin_provisioning, rotation_rate, mode_page, path, and\n\
\tdisksize=auto (re-read the backing store's size after growing it).\n\
--lld <driver> --mode logicalunit --op stat --tid <id> --lun <lun>\n\
\tshow the I/O statistics of the logical unit.\n\
--lld <driver> --mode account --op show\n\
\tshow all the accounts.\n\
--lld <driver> --mode account --op bind --user <name>\n\
\twithout --tid, bind the account globally (discovery sessions).\n\
--lld <driver> --mode portal --op new --params portal=<address>:<port>\n\
--lld <driver> --mode portal --op delete --params portal=<address>:<port>\n\
\tadd or remove a listening portal.\n\
--lld <driver> --mode portal --op show\n\
\tshow the portals.\n\
--lld <driver> --mode conn --op show --tid <id>\n\
\tshow the connections of the target with <id>.\n\
--lld <driver> --mode conn --op delete --tid <id> --sid <sid> --cid <cid>\n\
\tclose the connection <cid> of the session <sid>.\n\
--lld <driver> --mode session --op stat --tid <id> --sid <sid>\n\
--lld <driver> --mode conn --op stat --tid <id> --sid <sid> --cid <cid>\n\
\tshow the statistics of the session or the connection.\n\
--mode system --op show\n\
\tshow the system state, llds, backing stores and device types.\n\
--mode system --op update --name <debug|State> --value <on|off|offline|ready>\n\
\tswitch debugging, or take the whole target system offline or ready.\n\
--lld <driver> --mode target --op update --tid <id> --name state --value <offline|ready>\n\
\ttake one target offline (new logins are refused) or ready.\n\
--mode system --op delete\n\
\tstop tgtd (refused while targets exist).\n\
--control-port <port> use control port <port>\n\
--help\n\
\tdisplay this help and exit\n\n\
Report bugs to the curve-tgt project (see its README), not to tgt's mailing list.\n"
    )
}

/// What a run printed and returned (for tests).
#[cfg(test)]
fn run_captured(args: &[&str]) -> (i32, String, String) {
    let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = {
        let mut io = Io {
            out: &mut out,
            err: &mut err,
        };
        match build_request(&argv, &mut io) {
            Ok(_) => -1,
            Err(Exit(c)) => c,
        }
    };
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&str]) -> Request {
        let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
        };
        build_request(&argv, &mut io).unwrap().0
    }

    #[test]
    fn payloads_match_captures() {
        let r = req(&[
            "tgtadm",
            "--lld",
            "iscsi",
            "--op",
            "new",
            "--mode",
            "target",
            "--tid",
            "1",
            "-T",
            "iqn.2022-01.org.x:t1",
        ]);
        assert_eq!(r.encode().len(), 152);
        assert_eq!(r.hdr.lld, "iscsi");
        let r = req(&[
            "tgtadm",
            "--op=new",
            "--mode=logicalunit",
            "-t",
            "1",
            "--lun",
            "2",
            "-E",
            "curve",
            "-b",
            "cbd:pool//iscsi_test_",
        ]);
        assert_eq!(r.payload, "path=cbd:pool//iscsi_test_,bstype=curve");
        assert_eq!(r.hdr.lun, 2);
        assert_eq!(r.encode().len(), 160);
        let r = req(&[
            "tgtadm",
            "--op",
            "update",
            "--mode",
            "lu",
            "-t1",
            "-l1",
            "-P",
            "disksize=auto",
        ]);
        assert_eq!(r.payload, "targetOps disksize=auto,");
        assert_eq!(r.encode().len(), 145);
        let r = req(&[
            "tgtadm",
            "-o",
            "bind",
            "-m",
            "account",
            "-u",
            "u1",
            "--outgoing",
        ]);
        assert_eq!(
            (r.payload.as_str(), r.hdr.ac_dir, r.hdr.tid),
            ("user=u1", 1, -1)
        );
        let r = req(&[
            "tgtadm",
            "-m",
            "portal",
            "-o",
            "new",
            "-P",
            "portal=10.0.0.1:3260",
        ]);
        assert_eq!(r.payload, "portalOps portal=10.0.0.1:3260,");
        let r = req(&[
            "tgtadm", "--op", "delete", "--mode", "conn", "--tid", "1", "--sid", "2", "--cid", "0",
        ]);
        assert_eq!((r.hdr.sid, r.encode().len()), (2, 120));
        let r = req(&[
            "tgtadm", "--op", "delete", "--mode", "target", "--tid", "1", "--force",
        ]);
        assert_eq!(r.hdr.force, 1);
        let r = req(&[
            "tgtadm",
            "--op",
            "new",
            "--mode",
            "account",
            "--user",
            "u1",
            "--password",
            "p1",
        ]);
        assert_eq!(r.payload, "user=u1,password=p1");
        let r = req(&["tgtadm", "--op", "show", "--ti", "3", "--mode", "target"]);
        assert_eq!(r.hdr.tid, 3);
    }

    #[test]
    fn client_side_errors_match_debian() {
        let cases: &[(&[&str], i32, &str)] = &[
            (&["tgtadm", "--op", "new", "--mode", "target", "--tid", "0", "-T", "x"], 22, "tgtadm: 'tid' cannot be 0\n"),
            (&["tgtadm", "--op", "new", "--mode", "target", "-T", "x"], 22, "tgtadm: 'tid' option is necessary\n"),
            (&["tgtadm", "--b", "x"], 22, "tgtadm: option '--b' is ambiguous; possibilities: '--backing-store' '--bstype' '--bsopts' '--bsoflags' '--blocksize' '--bus'\nTry `tgtadm --help' for more information.\n"),
            (&["tgtadm", "--foo"], 22, "tgtadm: unrecognized option '--foo'\nTry `tgtadm --help' for more information.\n"),
            (&["tgtadm", "-x"], 22, "tgtadm: invalid option -- 'x'\nTry `tgtadm --help' for more information.\n"),
            (&["tgtadm", "--op"], 22, "tgtadm: option '--op' requires an argument\nTry `tgtadm --help' for more information.\n"),
            (&["tgtadm", "--force=1"], 22, "tgtadm: option '--force' doesn't allow an argument\nTry `tgtadm --help' for more information.\n"),
            (&["tgtadm", "--op", "show", "--mode", "target", "extra"], 22, "tgtadm: unrecognized option 'extra'\nTry `tgtadm --help' for more information.\n"),
            (&["tgtadm", "--op", "show", "--mode", "bogus"], 1, "tgtadm: unknown mode: bogus\n"),
            (&["tgtadm", "--op", "bogus"], 1, "tgtadm: unknown operation: bogus\n"),
            (&["tgtadm", "-t", "abc"], 22, "-t argument value 'abc' invalid\nTry `tgtadm --help' for more information.\n"),
            (&["tgtadm", "-t", "-1"], 22, "-t argument value '-1' invalid\nTry `tgtadm --help' for more information.\n"),
            (&["tgtadm", "--op", "show"], 22, "tgtadm: specify the mode\n"),
            (&["tgtadm", "--mode", "sys"], 22, "tgtadm: specify the operation type\n"),
            (&["tgtadm", "--op", "show", "--mode", "lu", "-t", "1"], 22, "tgtadm: 'lun' option is necessary\n"),
            (&["tgtadm", "--op", "start", "--mode", "lld", "-t", "1"], 22, "tgtadm: lld mode: option '-t' is not allowed/supported\n"),
            (&["tgtadm", "--op", "new", "--mode", "lld"], 22, "tgtadm: option 0 not supported in lld mode\n"),
            (&["tgtadm", "--op", "bind", "--mode", "target", "-t", "1"], 22, "tgtadm: bind operation requires initiator-address, initiator-nameor bus\n"),
            (&["tgtadm", "--op", "new", "--mode", "target", "-t", "1", "-P", "x"], 22, "tgtadm: target mode: option '-P' is not allowed/supported\n"),
            (&["tgtadm", "--op", "new", "--mode", "lu", "-t", "1", "-l", "1", "-Y", "bogus"], 22, "tgtadm: unknown target type: bogus\n"),
            (&["tgtadm", "--op", "bind", "--mode", "account", "--user", "x", "-O"], 22, "tgtadm: option requires an argument -- 'O'\nTry `tgtadm --help' for more information.\n"),
        ];
        for (args, code, err) in cases {
            let (c, _, e) = run_captured(args);
            assert_eq!((c, e.as_str()), (*code, *err), "{args:?}");
        }
        let (c, out, _) = run_captured(&["tgtadm", "-V"]);
        assert_eq!((c, out.as_str()), (0, "1.0.85\n"));
        let (c, out, _) = run_captured(&["tgtadm", "--help"]);
        assert!(c == 0 && out.starts_with(&format!("curve-tgt {PRODUCT_VERSION}: Linux SCSI Target administration utility, compatible with tgt 1.0.85\n\nUsage: tgtadm [OPTION]\n")));
        assert!(out.ends_with(
            "Report bugs to the curve-tgt project (see its README), not to tgt's mailing list.\n"
        ));
    }
}
