//! Debian's `tgt-admin` (perl, drives `tgtadm` from PATH) configures our tgtd from a
//! targets.conf, and initiators see exactly what the file says (issue 3, (b)).
//!
//! The same file is also loaded into Debian's tgtd, and everything is compared with it:
//! tgt-admin's own output, `tgtadm --op show --mode target`, `tgt-admin --dump`, and what
//! libiscsi's tools can and cannot reach (address ACL, name ACL, CHAP, mutual CHAP).

use crate::admin;
use admin::{normalize, require, require_debian_tgt, Daemon, Impl, DEBIAN_TGT_ADMIN};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const OPEN: &str = "iqn.2001-04.com.example:open";
const CHAP: &str = "iqn.2001-04.com.example:chap";
const BYNAME: &str = "iqn.2001-04.com.example:byname";
const ELSEWHERE: &str = "iqn.2001-04.com.example:elsewhere";
const ALLOWED: &str = "iqn.1994-05.com.example:allowed";
const STRANGER: &str = "iqn.1994-05.com.example:stranger";

fn targets_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "# Several targets, LUNs, ACLs and CHAP accounts.\n\
default-driver iscsi\n\
\n\
<target {OPEN}>\n\
    <backing-store {d}/disk1>\n\
        vendor_id NetEase\n\
        product_id CurveVolume\n\
        product_rev 2.0\n\
        lun 1\n\
    </backing-store>\n\
    <backing-store {d}/disk2>\n\
        lun 2\n\
    </backing-store>\n\
    initiator-address 127.0.0.1\n\
</target>\n\
\n\
<target {CHAP}>\n\
    backing-store {d}/disk3\n\
    incominguser alice alicesecret12\n\
    incominguser carol carolsecret1\n\
    outgoinguser bob bobsecret1234\n\
    initiator-address ALL\n\
</target>\n\
\n\
<target {BYNAME}>\n\
    bs-type null\n\
    allow-in-use yes\n\
    <backing-store /dev/null>\n\
        lun 3\n\
    </backing-store>\n\
    initiator-name {ALLOWED}\n\
    initiator-address 10.9.9.9\n\
</target>\n\
\n\
<target {ELSEWHERE}>\n\
    backing-store {d}/disk4\n\
    initiator-address 10.9.9.0/24\n\
    MaxRecvDataSegmentLength 65536\n\
</target>\n"
    )
}

/// Runs tgt-admin against `d` with `who`'s tgtadm first on PATH.
fn tgt_admin(d: &Daemon, who: Impl, args: &[&str]) -> Output {
    let bin = d.dir.path().join(format!("bin-{who:?}"));
    if !bin.exists() {
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(who.tgtadm(), bin.join("tgtadm")).unwrap();
    }
    Command::new(DEBIAN_TGT_ADMIN)
        .args(["-C", &d.ctl.to_string()])
        .args(args)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("TGT_IPC_SOCKET", d.socket_base())
        // tgt-admin walks perl hashes: fix their order so runs compare.
        .env("PERL_HASH_SEED", "0")
        .env("PERL_PERTURB_KEYS", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run tgt-admin")
}

fn setup(kind: Impl) -> Daemon {
    let d = Daemon::start(kind);
    for (name, mib) in [("disk1", 64u64), ("disk2", 16), ("disk3", 8), ("disk4", 4)] {
        std::fs::File::create(d.dir.path().join(name))
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
    }
    let conf = d.dir.path().join("targets.conf");
    std::fs::write(&conf, targets_conf(d.dir.path())).unwrap();
    let o = tgt_admin(&d, Impl::Debian, &["-e", "-c", conf.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "tgt-admin -e against {:?} tgtd failed:\n{}{}",
        kind,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    d
}

/// Runs a libiscsi tool; Ok(stdout) on success, Err(stdout+stderr) otherwise.
fn iscsi(tool: &str, args: &[String]) -> Result<String, String> {
    let o = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    if o.status.success() {
        Ok(out)
    } else {
        Err(out + &String::from_utf8_lossy(&o.stderr))
    }
}

/// What an initiator can see and reach, as a list of facts to compare across daemons.
fn initiator_view(d: &Daemon) -> Vec<String> {
    let portal = format!("127.0.0.1:{}", d.port);
    let url =
        |cred: &str, iqn: &str, lun: u32, q: &str| format!("iscsi://{cred}{portal}/{iqn}/{lun}{q}");
    let mut facts = Vec::new();
    let mut fact = |what: &str, ok: bool| facts.push(format!("{what}: {ok}"));

    // Discovery: the address and name ACLs filter SendTargets as they filter logins.
    for ini in [ALLOWED, STRANGER] {
        let out = iscsi(
            "iscsi-ls",
            &["-i".into(), ini.into(), format!("iscsi://{portal}")],
        )
        .unwrap_or_else(|e| panic!("iscsi-ls as {ini}: {e}"));
        for t in [OPEN, CHAP, BYNAME, ELSEWHERE] {
            fact(
                &format!("{ini} discovers {t}"),
                out.contains(&format!("Target:{t} ")),
            );
        }
    }

    // The open target by address, with the LU parameters from the file.
    let inq = iscsi("iscsi-inq", &[url("", OPEN, 1, "")]);
    fact("inquiry open/1", inq.is_ok());
    let inq = inq.unwrap_or_default();
    fact("open/1 vendor NetEase", inq.contains("Vendor:NetEase"));
    fact(
        "open/1 product CurveVolume",
        inq.contains("Product:CurveVolume"),
    );
    fact("open/1 revision 2.0", inq.contains("Revision:2.0"));
    let cap = iscsi("iscsi-readcapacity16", &[url("", OPEN, 2, "")]).unwrap_or_default();
    fact(
        "open/2 is 16 MiB",
        cap.contains(&format!("Total size:{}", 16u64 << 20)),
    );

    // Address ACL that does not match 127.0.0.1.
    fact(
        "inquiry elsewhere/1",
        iscsi("iscsi-inq", &[url("", ELSEWHERE, 1, "")]).is_ok(),
    );

    // Name ACL, and the null backing store at LUN 3.
    for ini in [ALLOWED, STRANGER] {
        fact(
            &format!("{ini} inquiry byname/3"),
            iscsi(
                "iscsi-inq",
                &["-i".into(), ini.into(), url("", BYNAME, 3, "")],
            )
            .is_ok(),
        );
    }

    // CHAP: no secret, a wrong secret, each right one, and mutual CHAP both ways.
    for (label, cred, q) in [
        ("chap without credentials", "", ""),
        ("chap alice wrong secret", "alice%wrongsecret1@", ""),
        ("chap unknown user", "mallory%alicesecret12@", ""),
        ("chap alice right secret", "alice%alicesecret12@", ""),
        ("chap carol right secret", "carol%carolsecret1@", ""),
        (
            "mutual chap, right target secret",
            "alice%alicesecret12@",
            "?target_user=bob&target_password=bobsecret1234",
        ),
        (
            "mutual chap, wrong target secret",
            "alice%alicesecret12@",
            "?target_user=bob&target_password=notbobsecret",
        ),
    ] {
        fact(label, iscsi("iscsi-inq", &[url(cred, CHAP, 1, q)]).is_ok());
    }
    facts
}

#[test]
fn tgt_admin_configures_our_tgtd_like_debians() {
    require_debian_tgt();
    require(DEBIAN_TGT_ADMIN, "tgt");
    require("perl", "perl");
    for tool in ["iscsi-ls", "iscsi-inq", "iscsi-readcapacity16"] {
        require(tool, "libiscsi-bin");
    }
    let deb = setup(Impl::Debian);
    let ours = setup(Impl::Ours);

    // What tgt-admin configured, as tgtadm shows it.
    let show = |d: &Daemon| {
        normalize(
            &d.tgtadm_ok(Impl::Debian, &["--op", "show", "--mode", "target"]),
            d,
        )
    };
    let (want, got) = (show(&deb), show(&ours));
    assert_eq!(
        got, want,
        "show target after tgt-admin -e differs from Debian"
    );
    for t in [OPEN, CHAP, BYNAME, ELSEWHERE] {
        assert!(got.contains(t), "{t} missing:\n{got}");
    }
    assert!(
        got.contains("        alice\n        carol\n        bob (outgoing)\n"),
        "{got}"
    );
    assert!(
        got.contains("Backing store type: null\n            Backing store path: /dev/null"),
        "{got}"
    );

    // The per-target iSCSI key from the file reached the target's parameters (tgt-admin
    // numbers targets in name order: elsewhere is tid 3). Ours opens a 512-command window.
    let params = |d: &Daemon| {
        d.tgtadm_ok(
            Impl::Debian,
            &["--op", "show", "--mode", "target", "--tid", "3"],
        )
        .replace("MaxQueueCmd=512", "MaxQueueCmd=128")
    };
    let got = params(&ours);
    assert_eq!(got, params(&deb));
    assert!(got.contains("MaxRecvDataSegmentLength=65536\n"), "{got}");

    // tgt-admin --dump reads it back the same, whichever tgtadm it finds on PATH.
    let dump = |d: &Daemon, who: Impl| {
        let o = tgt_admin(d, who, &["--dump"]);
        assert!(o.status.success(), "tgt-admin --dump: {o:?}");
        normalize(&String::from_utf8_lossy(&o.stdout), d)
    };
    let want = dump(&deb, Impl::Debian);
    assert_eq!(
        dump(&ours, Impl::Debian),
        want,
        "tgt-admin --dump (Debian tgtadm) differs"
    );
    assert_eq!(
        dump(&ours, Impl::Ours),
        want,
        "tgt-admin --dump (our tgtadm) differs"
    );
    assert_eq!(
        dump(&deb, Impl::Ours),
        want,
        "tgt-admin --dump via our tgtadm on Debian's tgtd"
    );
    // (tgt-admin cannot read secrets back, and it files a CIDR address ACL under
    // initiator-name: both are tgt-admin's own behaviour, the same against Debian's tgtd.)
    assert!(
        want.contains("\tincominguser alice PLEASE_CORRECT_THE_PASSWORD\n"),
        "{want}"
    );
    assert!(
        want.contains("\toutgoinguser bob PLEASE_CORRECT_THE_PASSWORD\n"),
        "{want}"
    );
    assert!(
        want.contains("initiator-name iqn.1994-05.com.example:allowed"),
        "{want}"
    );

    // Initiators see exactly what the file says: identical to Debian, and as expected.
    let (want, got) = (initiator_view(&deb), initiator_view(&ours));
    assert_eq!(got, want, "initiator view differs from Debian's tgtd");
    let expect_true = [
        "iqn.1994-05.com.example:allowed discovers iqn.2001-04.com.example:open: true",
        "iqn.1994-05.com.example:allowed discovers iqn.2001-04.com.example:byname: true",
        "iqn.1994-05.com.example:allowed discovers iqn.2001-04.com.example:elsewhere: false",
        "iqn.1994-05.com.example:stranger discovers iqn.2001-04.com.example:byname: false",
        "inquiry open/1: true",
        "open/1 vendor NetEase: true",
        "open/1 product CurveVolume: true",
        "open/1 revision 2.0: true",
        "open/2 is 16 MiB: true",
        "inquiry elsewhere/1: false",
        "iqn.1994-05.com.example:allowed inquiry byname/3: true",
        "iqn.1994-05.com.example:stranger inquiry byname/3: false",
        "chap without credentials: false",
        "chap alice wrong secret: false",
        "chap unknown user: false",
        "chap alice right secret: true",
        "chap carol right secret: true",
        "mutual chap, right target secret: true",
        "mutual chap, wrong target secret: false",
    ];
    for f in expect_true {
        assert!(got.iter().any(|g| g == f), "expected `{f}` in {got:#?}");
    }

    // tgt's systemd stop sequence: offline, remove everything from the config, stop.
    for d in [&deb, &ours] {
        let o = tgt_admin(d, Impl::Debian, &["--offline", "ALL"]);
        assert!(o.status.success(), "tgt-admin --offline ALL: {o:?}");
        let o = tgt_admin(
            d,
            Impl::Debian,
            &["--update", "ALL", "-c", "/dev/null", "-f"],
        );
        assert!(
            o.status.success(),
            "tgt-admin --update ALL -c /dev/null -f: {o:?}"
        );
        assert_eq!(
            d.tgtadm_ok(Impl::Debian, &["--op", "show", "--mode", "target"]),
            ""
        );
    }
}
