//! Debian's own tgtadm against our control thread, over a real Unix socket in a temp dir.
//! Skipped when Debian's tgt is not installed.

use curve_tgt::mgmt::server::{ControlOptions, ControlSocket, NullPlane, PlaneCall};
use std::path::Path;
use std::process::Command;

const DEBIAN_TGTADM: &str = "/usr/sbin/tgtadm";

fn tgtadm(base: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(DEBIAN_TGTADM)
        .env("TGT_IPC_SOCKET", base)
        .args(["-C", "9"])
        .args(args)
        .output()
        .expect("run tgtadm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn debian_tgtadm_drives_our_control_thread() {
    if !Path::new(DEBIAN_TGTADM).exists() {
        eprintln!("SKIP: Debian tgtadm not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("socket");
    let opts = ControlOptions {
        control_port: 9,
        socket_base: base.clone(),
        portals: vec!["127.0.0.1:3260".parse().unwrap()],
        nop_interval: 0,
        nop_count: 0,
    };
    let sock = ControlSocket::bind(&opts).unwrap();
    let plane = NullPlane::default();
    let (_tx, rx) = crossbeam_channel::unbounded();
    let p2 = plane.clone();
    let th = std::thread::spawn(move || sock.serve(&opts, Box::new(p2), rx));

    let ok = |s: &str| (0, s.to_string(), String::new());
    let err = |m: &str| (22, String::new(), format!("tgtadm: {m}\n"));
    assert_eq!(tgtadm(&base, &["--op", "show", "--mode", "target"]), ok(""));
    assert_eq!(
        tgtadm(
            &base,
            &[
                "--op",
                "new",
                "--mode",
                "target",
                "--tid",
                "1",
                "-T",
                "iqn.2022-01.org.x:t1"
            ]
        ),
        ok("")
    );
    assert_eq!(
        tgtadm(
            &base,
            &[
                "--op",
                "new",
                "--mode",
                "target",
                "--tid",
                "2",
                "-T",
                "iqn.2022-01.org.x:t1"
            ]
        ),
        err("this target already exists")
    );
    assert_eq!(
        tgtadm(
            &base,
            &[
                "--op",
                "new",
                "--mode",
                "logicalunit",
                "--tid",
                "1",
                "--lun",
                "1",
                "-b",
                "/nonexistent"
            ]
        ),
        err("invalid request")
    );
    assert_eq!(
        tgtadm(
            &base,
            &[
                "--op",
                "new",
                "--mode",
                "logicalunit",
                "--tid",
                "1",
                "--lun",
                "1",
                "-b",
                "/dev/null",
                "-E",
                "null"
            ]
        ),
        ok("")
    );
    assert_eq!(
        tgtadm(
            &base,
            &["--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"]
        ),
        ok("")
    );
    assert_eq!(
        tgtadm(
            &base,
            &["--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"]
        ),
        err("this access control rule already exists")
    );
    let (rc, out, _) = tgtadm(&base, &["--op", "show", "--mode", "target", "--tid", "1"]);
    assert_eq!(rc, 0);
    assert!(out.starts_with("nop_interval=0\nnop_count=0\nMaxRecvDataSegmentLength=8192\n"));
    assert_eq!(
        tgtadm(&base, &["--op", "show", "--mode", "target", "--tid", "5"]),
        err("can't find the target")
    );
    for (u, p) in [("inuser", "secret1"), ("outuser", "secret2")] {
        assert_eq!(
            tgtadm(
                &base,
                &[
                    "--op",
                    "new",
                    "--mode",
                    "account",
                    "--user",
                    u,
                    "--password",
                    p
                ]
            ),
            ok("")
        );
    }
    assert_eq!(
        tgtadm(&base, &["--op", "show", "--mode", "account"]),
        ok("Account list:\n    outuser\n    inuser\n")
    );
    assert_eq!(
        tgtadm(
            &base,
            &["--op", "bind", "--mode", "account", "--user", "inuser"]
        ),
        ok("")
    );
    let (_, sys, _) = tgtadm(&base, &["--op", "show", "--mode", "sys"]);
    assert!(sys.starts_with(
        "System:\n    State: ready\n    debug: off\nLLDs:\n    iscsi: ready\nBacking stores:\n"
    ));
    assert!(sys.ends_with("    Account information:\n\n    inuser\niSNS:\n    iSNS=Off\n    iSNSServerIP=\n    iSNSServerPort=3205\n    iSNSAccessControl=Off\n"));
    assert_eq!(
        tgtadm(&base, &["--op", "show", "--mode", "lld"]),
        ok("LLDs:\n    iscsi: ready\n        Target 1: iqn.2022-01.org.x:t1\n")
    );
    assert_eq!(
        tgtadm(&base, &["--op", "show", "--mode", "portal"]),
        ok("Portal: 127.0.0.1:3260,1\n")
    );
    assert_eq!(
        tgtadm(&base, &["--op", "show", "--mode", "session", "--tid", "1"]),
        err("invalid request")
    );
    assert_eq!(
        tgtadm(&base, &["--op", "delete", "--mode", "sys"]),
        err("invalid request")
    );
    assert_eq!(
        tgtadm(&base, &["--op", "delete", "--mode", "target", "--tid", "1"]),
        ok("")
    );
    // tgtadm waits for ECONNREFUSED after a successful sys delete.
    assert_eq!(tgtadm(&base, &["--op", "delete", "--mode", "sys"]), ok(""));
    th.join().unwrap().unwrap();
    assert_eq!(plane.take().last(), Some(&PlaneCall::Shutdown));
}
